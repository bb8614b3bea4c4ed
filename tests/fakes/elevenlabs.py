"""A fake ElevenLabs Agents server: the conversation WebSocket plus the signed-URL endpoint.

* ``GET /v1/convai/conversation/get-signed-url?agent_id=…`` (plain HTTP/1.1,
  h11) with ``xi-api-key``: a wrong key → 401 ``invalid_api_key``; an
  unknown agent → 404; else ``{"signed_url": "ws://…?agent_id=…&conversation_signature=…"}``.
  Signatures are single-use (as with ``include_conversation_id``).
* ``WS /v1/convai/conversation``: a private agent (``private=True``) needs a
  valid, unused signature, a public one only ``agent_id`` (unknown → close
  1008).  The first client message must be
  ``conversation_initiation_client_data`` (else close 1008); the server then
  sends ``conversation_initiation_metadata`` with the agent's formats
  (``input_format`` / ``output_format``, ``ulaw_8000`` by default) and a
  ``ping`` (``pongs`` counts the answers carrying its ``event_id``).
* ``user_audio_chunk`` feeds an energy VAD: speech during a reply →
  ``interruption`` (with the last audio ``event_id``), end of speech →
  ``user_transcript``, then either a ``client_tool_call`` (knob
  ``client_tool``) or a reply: ``agent_response``, ``audio`` events,
  ``agent_response_complete``.  ``client_tool_result`` for a known id → a
  short follow-up reply.  Knobs: ``end_call_after_reply`` (close 1000 after
  the reply, like the system end_call tool), ``garbage``, ``pace_s``,
  ``reply_ms``.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import secrets
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import trio
from trio_websocket import WebSocketConnection, WebSocketRequest, serve_websocket

from fakes import EnergyVad, Recorder, WsConn, tone

API_KEY = "sk_el0123456789abcdef0123456789abcdef0123456789"
AGENT_ID = "agent_0123456789abcdefghij"


class FakeElevenLabs(Recorder):
    def __init__(self, api_key: str = API_KEY, agent_id: str = AGENT_ID, *, private: bool = False,
                 reply_ms: int = 800, chunk_ms: int = 100, pace_s: float = 0.0) -> None:
        super().__init__()
        self.api_key, self.agent_id, self.private = api_key, agent_id, private
        self.reply_ms, self.chunk_ms, self.pace_s = reply_ms, chunk_ms, pace_s
        self.input_format = self.output_format = "ulaw_8000"
        self.client_tool: tuple[str, dict[str, Any]] | None = None
        self.end_call_after_reply = False
        self.garbage = False
        self.signatures: set[str] = set()
        self.signed_url_requests: list[dict[str, str]] = []
        self.connections = self.live = self.pongs = 0
        self.tool_results: list[dict[str, Any]] = []
        self.ws_url = self.http_url = ""

    async def serve(self, nursery: trio.Nursery) -> tuple[str, str]:
        """Start both endpoints; returns (ws url, http base url)."""
        server = await nursery.start(partial(serve_websocket, self._handle, "127.0.0.1", 0, ssl_context=None))
        self.ws_url = f"ws://127.0.0.1:{server.port}/v1/convai/conversation"
        listeners = await nursery.start(partial(trio.serve_tcp, self._http, 0, host="127.0.0.1"))
        self.http_url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        return self.ws_url, self.http_url

    # -- HTTP: the signed URL --

    async def _http(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        with trio.move_on_after(5):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
        if request is None:
            await stream.aclose()
            return
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        self.signed_url_requests.append(headers)
        target = urlsplit(request.target.decode())
        query = parse_qs(target.query)
        if target.path != "/v1/convai/conversation/get-signed-url":
            status, body = 404, {"detail": "Not Found"}
        elif headers.get("xi-api-key") != self.api_key:
            status, body = 401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
        elif query.get("agent_id") != [self.agent_id]:
            status, body = 404, {"detail": {"status": "agent_not_found", "message": "Agent not found"}}
        else:
            sig = secrets.token_urlsafe(16)
            self.signatures.add(sig)
            status, body = 200, {"signed_url": f"{self.ws_url}?agent_id={self.agent_id}&conversation_signature={sig}"}
        data = json.dumps(body).encode()
        out = conn.send(h11.Response(status_code=status, headers=[("content-type", "application/json"),
                                                                  ("content-length", str(len(data)))]))
        out = (out or b"") + (conn.send(h11.Data(data=data)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
        await stream.send_all(out)
        await stream.aclose()
        self.changed()

    # -- the conversation socket --

    async def _handle(self, request: WebSocketRequest) -> None:
        parts = urlsplit(request.path)
        query = parse_qs(parts.query)
        if parts.path != "/v1/convai/conversation":
            await request.reject(404)
            return
        ws = await request.accept()
        if query.get("agent_id") != [self.agent_id]:
            await ws.aclose(1008, "Agent not found")
            return
        if self.private:
            sig = (query.get("conversation_signature") or [""])[0]
            if sig not in self.signatures:
                await ws.aclose(1008, "Invalid or expired signature")
                return
            self.signatures.discard(sig)  # single use
        self.connections += 1
        self.live += 1
        try:
            await _Conn(self, ws).run()
        finally:
            self.live -= 1
            self.changed()


class _Conn(WsConn):
    def __init__(self, fake: FakeElevenLabs, ws: WebSocketConnection) -> None:
        super().__init__(ws)
        self.fake = fake
        self.started = False
        self.vad = EnergyVad()
        self.event_ids = itertools.count(1)
        self.last_audio_id = 0
        self.open_calls: set[str] = set()
        self.reply: trio.CancelScope | None = None

    async def run(self) -> None:
        await self.serve_messages()

    async def handle(self, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
            assert isinstance(msg, dict)
        except (ValueError, AssertionError):
            await self.ws.aclose(1008, "Invalid message")
            return
        self.fake.record(msg)
        if not self.started:
            if msg.get("type") != "conversation_initiation_client_data":
                await self.ws.aclose(1008, "The first message must be conversation_initiation_client_data")
                return
            self.started = True
            await self.send({"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": {
                "conversation_id": f"conv_{self.fake.connections}", "agent_output_audio_format": self.fake.output_format,
                "user_input_audio_format": self.fake.input_format}})
            await self.send({"type": "ping", "ping_event": {"event_id": 77, "ping_ms": None}})
            if self.fake.garbage:
                await self.ws.send_message('{"type": "audio", "audio_event": "not an object"}')
            return
        if "user_audio_chunk" in msg:
            try:
                audio = base64.b64decode(msg["user_audio_chunk"], validate=True)
            except (binascii.Error, ValueError, TypeError):
                await self.ws.aclose(1008, "Invalid audio chunk")
                return
            await self.audio(audio)
        elif msg.get("type") == "pong":
            if msg.get("event_id") == 77:
                self.fake.pongs += 1
                self.fake.changed()
        elif msg.get("type") == "client_tool_result":
            self.fake.tool_results.append(msg)
            if msg.get("tool_call_id") in self.open_calls:
                self.open_calls.discard(msg["tool_call_id"])
                self.start_reply(tone(self.fake.reply_ms // 2, freq=660.0))

    async def audio(self, audio: bytes) -> None:
        for what, _at in self.vad.feed(audio):
            if what == "started":
                if self.reply is not None:
                    self.reply.cancel()
                    await self.send({"type": "interruption", "interruption_event": {"event_id": self.last_audio_id}})
            else:
                await self.send({"type": "user_transcript",
                                 "user_transcription_event": {"user_transcript": "(caller turn)"}})
                if self.fake.client_tool is not None:
                    name, params = self.fake.client_tool
                    self.fake.client_tool = None
                    call_id = f"tc_{next(self.event_ids)}"
                    self.open_calls.add(call_id)
                    await self.send({"type": "client_tool_call", "client_tool_call": {
                        "tool_name": name, "tool_call_id": call_id, "parameters": params}})
                else:
                    self.start_reply(tone(self.fake.reply_ms))

    def start_reply(self, audio: bytes) -> None:
        assert self.nursery is not None
        self.nursery.start_soon(self.speak, audio)

    async def speak(self, audio: bytes) -> None:
        with trio.CancelScope() as scope:
            self.reply = scope
            step = 8 * self.fake.chunk_ms
            for i in range(0, len(audio), step):
                event_id = self.last_audio_id = next(self.event_ids)
                await self.send({"type": "audio", "audio_event": {
                    "audio_base_64": base64.b64encode(audio[i:i + step]).decode(), "event_id": event_id}})
                if i == 0:
                    await self.send({"type": "agent_response", "agent_response_event": {
                        "agent_response": f"({len(audio) // 8} ms of reply)"}})
                await trio.sleep(self.fake.pace_s)
            await self.send({"type": "agent_response_complete"})
            if self.fake.end_call_after_reply:
                await self.ws.aclose(1000)
        if self.reply is scope:
            self.reply = None
