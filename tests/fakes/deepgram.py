"""A fake Deepgram Voice Agent API v1 server, as strict as the real one where it matters.

* Upgrade: ``/v1/agent/converse`` with ``Authorization: Token <key>``
  (anything else → HTTP 401, as Deepgram answers a bad key).
* ``Welcome`` at once; the first client message must be ``Settings``
  (else fatal ``Error NON_SETTINGS_MESSAGE_BEFORE_SETTINGS`` and close); a
  second one is ``SETTINGS_ALREADY_APPLIED``; audio that is not μ-law 8 kHz
  (or output not ``container: "none"``) is ``INVALID_SETTINGS``; then
  ``SettingsApplied``.  Unknown client types → ``UNPARSABLE_CLIENT_MESSAGE``.
* Binary audio feeds an energy VAD: caller speech → ``UserStartedSpeaking``
  (cancelling any reply), end of speech → ``ConversationText`` (user), then
  a reply: ``AgentStartedSpeaking``, binary μ-law chunks, ``AgentAudioDone``,
  ``ConversationText`` (assistant).
* Knobs: ``function_call`` (name, arguments JSON: a client-side
  ``FunctionCallRequest`` instead of the next reply), ``cancel_function_call``
  (follow it with ``FunctionCallCancelled``), ``garbage`` (a non-JSON text
  frame after ``SettingsApplied``), ``close_after_bytes`` (the session cap:
  close 1000 after that much caller audio, one-shot), ``reject_status``,
  ``pace_s``.  Every JSON client message is recorded (``received``);
  ``late_responses`` counts answers to cancelled calls (the real server drops them).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest

from fakes import EnergyVad, WsConn, WsFake, tone

API_KEY = "dgkey0123456789abcdef0123456789abcdef01"
CLIENT_TYPES = frozenset({"Settings", "KeepAlive", "FunctionCallResponse", "InjectAgentMessage", "InjectUserMessage",
                          "UpdatePrompt", "UpdateThink", "UpdateSpeak", "UpdateListen", "ForceEndTurn"})


class FakeDeepgram(WsFake):
    def __init__(self, api_key: str = API_KEY, *, reply_ms: int = 800, chunk_ms: int = 100,
                 pace_s: float = 0.0) -> None:
        super().__init__()
        self.api_key, self.reply_ms, self.chunk_ms, self.pace_s = api_key, reply_ms, chunk_ms, pace_s
        self.reject_status: int | None = None
        self.function_call: tuple[str, str] | None = None
        self.cancel_function_call = False
        self.garbage = False
        self.close_after_bytes: int | None = None
        self.audio_in: list[bytes] = []
        self.errors_sent: list[dict[str, Any]] = []
        self.late_responses = 0

    async def serve(self, nursery: trio.Nursery) -> str:
        return await self.listen(nursery, "/v1/agent/converse")

    async def _handle(self, request: WebSocketRequest) -> None:
        headers = self.upgrade(request)
        if request.path.split("?")[0] != "/v1/agent/converse":
            await request.reject(404)
            return
        if self.reject_status is not None:
            await request.reject(self.reject_status)
            return
        if headers.get("authorization") != f"Token {self.api_key}":
            await request.reject(401, body=b'{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials."}')
            return
        ws = await request.accept()
        await self.connected(_Conn(self, ws).run)


class _Conn(WsConn):
    def __init__(self, fake: FakeDeepgram, ws: WebSocketConnection) -> None:
        super().__init__(ws)
        self.fake = fake
        self.settings: dict[str, Any] | None = None
        self.vad = EnergyVad()
        self.bytes_in = 0
        self.ids = itertools.count(1)
        self.open_calls: set[str] = set()
        self.cancelled: set[str] = set()
        self.reply: trio.CancelScope | None = None

    async def fatal(self, code: str, description: str) -> None:
        err = {"type": "Error", "code": code, "description": description}
        self.fake.errors_sent.append(err)
        self.fake.changed()
        await self.send(err)
        await self.ws.aclose(1000)

    async def run(self) -> None:
        await self.send({"type": "Welcome", "request_id": f"req-{self.fake.connections}"})
        await self.serve_messages()

    async def handle(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            if self.settings is None:
                await self.fatal("NON_SETTINGS_MESSAGE_BEFORE_SETTINGS", "Audio was sent before Settings.")
                return
            await self.audio(raw)
            return
        try:
            msg = json.loads(raw)
            kind = msg["type"]
        except (ValueError, KeyError, TypeError):
            await self.fatal("UNPARSABLE_CLIENT_MESSAGE", "We could not parse a client message.")
            return
        self.fake.record(msg)
        if kind not in CLIENT_TYPES:
            await self.fatal("UNPARSABLE_CLIENT_MESSAGE", f"Unknown message type {kind!r}.")
        elif kind == "Settings":
            await self.on_settings(msg)
        elif self.settings is None:
            await self.fatal("NON_SETTINGS_MESSAGE_BEFORE_SETTINGS", f"{kind} before Settings.")
        elif kind == "FunctionCallResponse":
            await self.on_function_call_response(msg)

    async def on_settings(self, msg: dict[str, Any]) -> None:
        if self.settings is not None:
            await self.fatal("SETTINGS_ALREADY_APPLIED", "Settings can only be sent once.")
            return
        audio = msg.get("audio") or {}
        if (audio.get("input") != {"encoding": "mulaw", "sample_rate": 8000}
                or audio.get("output") != {"encoding": "mulaw", "sample_rate": 8000, "container": "none"}):
            await self.fatal("INVALID_SETTINGS", "audio must be declared (fake: mulaw/8000, container none).")
            return
        if not isinstance(msg.get("agent"), (str, dict)):
            await self.fatal("INVALID_SETTINGS", "agent is required.")
            return
        self.settings = msg
        await self.send({"type": "SettingsApplied"})
        if self.fake.garbage:
            await self.ws.send_message("this is not json {")

    async def audio(self, chunk: bytes) -> None:
        self.fake.audio_in.append(chunk)
        self.bytes_in += len(chunk)
        cap = self.fake.close_after_bytes
        if cap is not None and self.bytes_in >= cap:
            self.fake.close_after_bytes = None  # one-shot: the next session lives on
            await self.ws.aclose(1000, "session limit reached")
            return
        for what, _at in self.vad.feed(chunk):
            if what == "started":
                if self.reply is not None:
                    self.reply.cancel()
                await self.send({"type": "UserStartedSpeaking"})
            else:
                await self.send({"type": "ConversationText", "role": "user", "content": "(caller turn)"})
                await self.turn()

    async def turn(self) -> None:
        assert self.nursery is not None
        if self.fake.function_call is not None:
            name, arguments = self.fake.function_call
            self.fake.function_call = None
            call_id = f"fc_{next(self.ids)}"
            self.open_calls.add(call_id)
            await self.send({"type": "FunctionCallRequest", "functions": [
                {"id": call_id, "name": name, "arguments": arguments, "client_side": True}]})
            if self.fake.cancel_function_call:
                self.open_calls.discard(call_id)
                self.cancelled.add(call_id)
                await self.send({"type": "FunctionCallCancelled", "functions": [{"id": call_id, "name": name}]})
            return
        self.nursery.start_soon(self.speak, tone(self.fake.reply_ms))

    async def on_function_call_response(self, msg: dict[str, Any]) -> None:
        call_id = msg.get("id")
        if call_id in self.cancelled:
            self.fake.late_responses += 1  # dropped by the real server
            self.fake.changed()
            return
        if call_id not in self.open_calls or not isinstance(msg.get("content"), str):
            await self.send({"type": "Warning", "code": "UNKNOWN_FUNCTION_CALL", "description": "no such call"})
            return
        self.open_calls.discard(call_id)
        assert self.nursery is not None
        self.nursery.start_soon(self.speak, tone(self.fake.reply_ms // 2, freq=660.0))

    async def speak(self, audio: bytes) -> None:
        with trio.CancelScope() as scope:
            if self.reply is not None:
                self.reply.cancel()
            self.reply = scope
            await self.send({"type": "AgentThinking", "content": ""})
            await self.send({"type": "AgentStartedSpeaking", "total_latency": 0.3, "tts_latency": 0.1,
                             "ttt_latency": 0.2})
            step = 8 * self.fake.chunk_ms
            for i in range(0, len(audio), step):
                await self.send(audio[i:i + step])
                await trio.sleep(self.fake.pace_s)
            await self.send({"type": "AgentAudioDone"})
            await self.send({"type": "ConversationText", "role": "assistant",
                             "content": f"({len(audio) // 8} ms of reply)"})
        if self.reply is scope:
            self.reply = None
