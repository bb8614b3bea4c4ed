"""A fake Gemini Live API (BidiGenerateContent) server, as strict as the real one where it matters.

* Path ``/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent``;
  the key in ``x-goog-api-key`` (or ``?key=``).  A wrong key: the upgrade is
  accepted and closed with 1008 "API key not valid…" (``reject_status`` gives
  the HTTP-refusal reading instead).
* The first message must be ``setup`` (else close 1007); ``model`` must be
  ``models/…`` and ``responseModalities`` ``["AUDIO"]`` (else 1007).  A
  ``sessionResumption.handle`` the fake did not issue → close 1008.
  Then ``setupComplete``.
* ``realtimeInput.audio`` must be ``audio/pcm;rate=16000`` PCM16 (else 1007);
  it is decimated to 8 kHz μ-law for an energy VAD.  Speech during a reply →
  ``serverContent.interrupted`` then ``turnComplete``; end of speech →
  ``inputTranscription``, then a ``toolCall`` (knob ``tool_call``) or a
  reply: ``modelTurn`` chunks of PCM16 **24 kHz** (a sine), an
  ``outputTranscription``, ``generationComplete``, ``turnComplete``, and a
  ``sessionResumptionUpdate`` with a new handle.
* ``toolResponse`` must carry the ``id`` of an open call (else close 1007);
  one for a cancelled id is counted in ``late_responses``.  Knobs:
  ``cancel_tool_call``, ``go_away_after_turn`` (one-shot), ``garbage``,
  ``drop_after_messages`` (one-shot), ``reply_ms``, ``pace_s``.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import struct
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest

from fakes import EnergyVad, WsConn, WsFake, linear_to_ulaw

API_KEY = "AIzaFake0123456789abcdefghijklmnopqrstu"
PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


@lru_cache(maxsize=16)
def sine24k(ms: int, freq: float = 440.0, amp: float = 0.3) -> bytes:
    n = 24 * ms
    return struct.pack(f"<{n}h", *(int(amp * 32767 * math.sin(2 * math.pi * freq * i / 24000)) for i in range(n)))


class FakeGemini(WsFake):
    def __init__(self, api_key: str = API_KEY, *, reply_ms: int = 800, chunk_ms: int = 100,
                 pace_s: float = 0.0) -> None:
        super().__init__()
        self.api_key, self.reply_ms, self.chunk_ms, self.pace_s = api_key, reply_ms, chunk_ms, pace_s
        self.reject_status: int | None = None
        self.tool_call: tuple[str, dict[str, Any]] | None = None
        self.cancel_tool_call = False
        self.go_away_after_turn = False
        self.garbage = False
        self.drop_after_messages: int | None = None
        self.handles: set[str] = set()
        self.resumed: list[str] = []
        self.late_responses = 0
        self.audio_in_16k = bytearray()
        self.closes: list[tuple[int, str]] = []

    async def serve(self, nursery: trio.Nursery) -> str:
        return await self.listen(nursery, PATH)

    async def _handle(self, request: WebSocketRequest) -> None:
        headers = self.upgrade(request)
        parts = urlsplit(request.path)
        if parts.path != PATH:
            await request.reject(404)
            return
        if self.reject_status is not None:
            await request.reject(self.reject_status)
            return
        key = headers.get("x-goog-api-key") or (parse_qs(parts.query).get("key") or [""])[0]
        ws = await request.accept()

        async def run() -> None:
            conn = _Conn(self, ws, self.connections)
            if key != self.api_key:
                await conn.close(1008, "API key not valid. Please pass a valid API key.")
            else:
                await conn.run()

        await self.connected(run)


class _Conn(WsConn):
    def __init__(self, fake: FakeGemini, ws: WebSocketConnection, number: int) -> None:
        super().__init__(ws)
        self.fake, self.number = fake, number
        self.setup: dict[str, Any] | None = None
        self.vad = EnergyVad()
        self.ids = itertools.count(1)
        self.messages = 0
        self.open_calls: set[str] = set()
        self.cancelled: set[str] = set()
        self.reply: trio.CancelScope | None = None

    async def close(self, code: int, reason: str) -> None:
        self.fake.closes.append((code, reason))
        await self.ws.aclose(code, reason)

    async def run(self) -> None:
        await self.serve_messages()

    async def handle(self, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
            assert isinstance(msg, dict) and len(msg) == 1
        except (ValueError, AssertionError):
            await self.close(1007, "Invalid JSON payload received.")
            return
        self.fake.record(msg)
        self.messages += 1
        if self.fake.drop_after_messages is not None and self.messages >= self.fake.drop_after_messages:
            self.fake.drop_after_messages = None
            await self.close(1011, "Internal error encountered.")
            return
        (kind, body), = msg.items()
        if self.setup is None:
            if kind != "setup":
                await self.close(1007, "The first message must be setup.")
                return
            await self.on_setup(body)
        elif kind == "realtimeInput":
            await self.on_audio(body)
        elif kind == "toolResponse":
            await self.on_tool_response(body)
        elif kind == "clientContent":
            pass
        else:
            await self.close(1007, f"Unknown message {kind!r}.")

    async def on_setup(self, setup: Any) -> None:
        if (not isinstance(setup, dict) or not str(setup.get("model", "")).startswith("models/")
                or (setup.get("generationConfig") or {}).get("responseModalities") != ["AUDIO"]):
            await self.close(1007, "Invalid setup.")
            return
        handle = (setup.get("sessionResumption") or {}).get("handle")
        if handle is not None:
            if handle not in self.fake.handles:
                await self.close(1008, "Session resumption handle is invalid.")
                return
            self.fake.resumed.append(handle)
        self.setup = setup
        await self.send({"setupComplete": {"sessionId": f"s{self.number}"}})
        if self.fake.garbage:
            await self.ws.send_message('{"serverContent": {"modelTurn": {"parts": "nope"}}}')

    async def on_audio(self, body: Any) -> None:
        audio = body.get("audio") if isinstance(body, dict) else None
        if not isinstance(audio, dict) or audio.get("mimeType") != "audio/pcm;rate=16000":
            await self.close(1007, "realtimeInput.audio needs audio/pcm;rate=16000 (fake rule).")
            return
        pcm = base64.b64decode(audio["data"])
        self.fake.audio_in_16k += pcm
        samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)[::2]
        for what, _at in self.vad.feed(bytes(linear_to_ulaw(s) for s in samples)):
            if what == "started":
                if self.reply is not None:
                    self.reply.cancel()
                    self.reply = None
                    await self.send({"serverContent": {"interrupted": True}})
                    await self.send({"serverContent": {"turnComplete": True}})
            else:
                await self.send({"serverContent": {"inputTranscription": {"text": "(caller "}}})
                await self.send({"serverContent": {"inputTranscription": {"text": "turn)"}}})
                await self.turn()

    async def turn(self) -> None:
        assert self.nursery is not None
        if self.fake.tool_call is not None:
            name, args = self.fake.tool_call
            self.fake.tool_call = None
            call_id = f"function-call-{next(self.ids)}"
            self.open_calls.add(call_id)
            await self.send({"toolCall": {"functionCalls": [{"id": call_id, "name": name, "args": args}]}})
            if self.fake.cancel_tool_call:
                self.open_calls.discard(call_id)
                self.cancelled.add(call_id)
                await self.send({"toolCallCancellation": {"ids": [call_id]}})
            return
        self.nursery.start_soon(self.speak, self.fake.reply_ms)

    async def on_tool_response(self, body: Any) -> None:
        responses = body.get("functionResponses") if isinstance(body, dict) else None
        for r in responses if isinstance(responses, list) else [None]:
            call_id = r.get("id") if isinstance(r, dict) else None
            if call_id in self.cancelled:
                self.fake.late_responses += 1
                continue
            if call_id not in self.open_calls or not isinstance(r.get("response"), dict):
                await self.close(1007, "toolResponse: unknown function call id.")
                return
            self.open_calls.discard(call_id)
            assert self.nursery is not None
            self.nursery.start_soon(self.speak, self.fake.reply_ms // 2)

    async def speak(self, ms: int) -> None:
        with trio.CancelScope() as scope:
            self.reply = scope
            audio, step = sine24k(ms), 48 * self.fake.chunk_ms
            for i in range(0, len(audio), step):
                await self.send({"serverContent": {"modelTurn": {"parts": [{"inlineData": {
                    "mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(audio[i:i + step]).decode()}}]}}})
                await trio.sleep(self.fake.pace_s)
            await self.send({"serverContent": {"outputTranscription": {"text": f"({ms} ms of reply)"}}})
            await self.send({"serverContent": {"generationComplete": True}})
            await self.send({"serverContent": {"turnComplete": True}})
            handle = f"handle-{self.number}-{next(self.ids)}"
            self.fake.handles.add(handle)
            await self.send({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})
            if self.fake.go_away_after_turn:
                self.fake.go_away_after_turn = False
                await self.send({"goAway": {"timeLeft": "10s"}})
        if self.reply is scope:
            self.reply = None
