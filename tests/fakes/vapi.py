"""A fake VAPI: ``POST /call`` with the ``vapi.websocket`` transport, and the call's socket.

It holds the bridge to the documented protocol (agent-providers.md, VAPI):

* ``POST /call`` needs ``Authorization: Bearer <private key>`` (else 401 in
  VAPI's error shape) and a body of documented keys only (else 400 with
  VAPI's ``message`` list): ``assistantId`` *or* an inline ``assistant``, the
  exact μ-law transport, no ``phoneNumber``/``phoneNumberId``, valid
  ``assistantOverrides``.  It answers 201 with ``id``, ``type``,
  ``status: queued`` and ``transport.websocketCallUrl`` = its own
  ``ws://127.0.0.1:PORT/<id>/transport`` (usable once: call ids cannot be reused).
* The socket: binary μ-law both ways, JSON control messages (sent flat, or
  wrapped as ``{"message": …}`` with ``wrap=True``).  The simulated assistant
  echoes each caller utterance after a short silence (with
  ``speech-update`` started/stopped around it and a user ``transcript``),
  paced like speech; caller speech during a reply cancels it and sends
  ``user-interrupted``.  Tests script the rest: :meth:`FakeVapiCall.send_json`
  (``hang``, ``tool-calls`` …), :meth:`FakeVapiCall.drop`.
* Everything received is recorded (audio bytes, JSON messages incl.
  ``end-call``), with waits that need no polling.
"""

from __future__ import annotations

import json
import secrets
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import trio

from fakes import EnergyVad, Recorder
from fakes.twilio_rest import lifespan, read_body, respond, serve_asgi

API_KEY = "vapi-private-key-0123456789abcdef"
ASSISTANT_ID = "0b5e5b2a-aaaa-4bbb-8ccc-0123456789ab"
TRANSPORT = {"provider": "vapi.websocket",
             "audioFormat": {"format": "mulaw", "container": "raw", "sampleRate": 8000}}
BODY_KEYS = {"assistantId", "assistant", "assistantOverrides", "squad", "squadId", "transport", "name",
             "customer", "customerId", "metadata"}
OVERRIDE_KEYS = {"clientMessages", "serverMessages", "variableValues", "firstMessage", "firstMessageMode",
                 "metadata", "model", "voice", "transcriber", "endCallMessage", "maxDurationSeconds"}
CLIENT_MESSAGES = {"conversation-update", "function-call", "function-call-result", "hang", "language-changed",
                   "metadata", "model-output", "speech-update", "status-update", "transcript", "tool-calls",
                   "tool-calls-result", "transfer-update", "user-interrupted", "voice-input",
                   "workflow.node.started"}
FIRST_MESSAGE_MODES = {"assistant-speaks-first", "assistant-speaks-first-with-model-generated-message",
                       "assistant-waits-for-user"}


def check_body(body: Any, assistant_ids: set[str]) -> list[str]:
    """VAPI-style validation problems of a ``POST /call`` body (empty: valid)."""
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    problems = [f"property {k} should not exist" for k in body if k not in BODY_KEYS]
    if "phoneNumber" in body or "phoneNumberId" in body:
        problems.append("phoneNumber/phoneNumberId are not allowed with the vapi.websocket transport")
    if ("assistantId" in body) == ("assistant" in body):
        problems.append("exactly one of assistantId or assistant is required")
    elif "assistantId" in body and body["assistantId"] not in assistant_ids:
        problems.append("Couldn't Get Assistant. `assistantId` Does Not Exist.")
    elif "assistant" in body and not isinstance(body["assistant"], dict):
        problems.append("assistant must be an object")
    if body.get("transport") != TRANSPORT:
        problems.append(f"transport must be {json.dumps(TRANSPORT)}")
    overrides = body.get("assistantOverrides", {})
    if not isinstance(overrides, dict):
        problems.append("assistantOverrides must be an object")
    else:
        problems += [f"assistantOverrides.property {k} should not exist" for k in overrides if k not in OVERRIDE_KEYS]
        for m in overrides.get("clientMessages", []):
            if m not in CLIENT_MESSAGES:
                problems.append(f"assistantOverrides.clientMessages: {m!r} is not a valid value")
        if overrides.get("firstMessageMode", "assistant-speaks-first") not in FIRST_MESSAGE_MODES:
            problems.append("assistantOverrides.firstMessageMode: invalid value")
        if not isinstance(overrides.get("variableValues", {}), dict):
            problems.append("assistantOverrides.variableValues must be an object")
    return problems


class FakeVapiCall:
    """One created call: its body, its socket, what it received, its assistant."""

    def __init__(self, fake: FakeVapi, call_id: str, body: dict[str, Any], ws_url: str) -> None:
        self.fake = fake
        self.id = call_id
        self.body = body
        self.ws_url = ws_url
        self.audio_in = bytearray()
        self.audio_out = bytearray()
        self.recorder = Recorder()  # JSON received, in order
        self.connected = trio.Event()
        self.closed = trio.Event()
        self.client_close_code: int | None = None
        self.turns = 0
        self.interruptions = 0
        self._send: Any = None
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._reply: trio.CancelScope | None = None
        self._vad = EnergyVad(silence_ms=fake.silence_ms, prefix_ms=0)

    @property
    def received(self) -> list[dict[str, Any]]:
        return self.recorder.received

    # -- scripted by tests ---------------------------------------------------------

    async def send_json(self, msg: dict[str, Any], wrap: bool | None = None) -> None:
        wrap = self.fake.wrap if wrap is None else wrap
        async with self._lock:
            await self._send({"type": "websocket.send", "text": json.dumps({"message": msg} if wrap else msg)})

    async def send_audio(self, data: bytes) -> None:
        async with self._lock:
            await self._send({"type": "websocket.send", "bytes": data})
        self.audio_out += data
        self.recorder.changed()

    async def tool_call(self, name: str, arguments: dict[str, Any] | None = None,
                        declares: tuple[str, ...] = ()) -> None:
        """A ``tool-calls`` message as VAPI sends it: ``toolCallList`` (function name +
        arguments) and ``toolWithToolCallList`` (each with the tool's config, whose
        ``function.parameters`` declares ``declares``)."""
        call = {"id": "call_" + secrets.token_hex(4), "type": "function",
                "function": {"name": name, "arguments": arguments or {}}}
        tool = {"type": "function", "name": name, "toolCall": call,
                "function": {"name": name, "parameters": {
                    "type": "object", "properties": {p: {"type": "string"} for p in declares}}}}
        await self.send_json({"type": "tool-calls", "toolCallList": [call], "toolWithToolCallList": [tool]})

    async def drop(self, code: int = 1011) -> None:
        """VAPI goes away mid-call."""
        async with self._lock:
            await self._send({"type": "websocket.close", "code": code})
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- the socket ------------------------------------------------------------------

    async def serve(self, receive: Any, send: Any) -> None:
        self._send = send
        await send({"type": "websocket.accept"})
        self.connected.set()
        self.fake.recorder.changed()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._reader(receive)
                nursery.cancel_scope.cancel()
        finally:
            self.closed.set()
            self.recorder.changed()
            self.fake.recorder.changed()

    async def _reader(self, receive: Any) -> None:
        # Always drain (hypercorn stops reading a socket whose app does not).
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                self.client_close_code = msg.get("code")
                return
            if msg.get("bytes") is not None:
                await self._caller_audio(msg["bytes"])
            elif msg.get("text") is not None:
                data = json.loads(msg["text"])
                self.recorder.record(data)
                if data.get("type") in ("end-call", "hangup"):
                    async with self._lock:
                        await self._send({"type": "websocket.close", "code": 1000})
                    return

    async def _caller_audio(self, data: bytes) -> None:
        self.audio_in += data
        self.recorder.changed()
        if not self.fake.echo:
            return
        for kind, _t_ms in self._vad.feed(data):
            if kind == "started" and self._reply is not None:
                self._reply.cancel()
                self._reply = None
                self.interruptions += 1
                await self.send_json({"type": "user-interrupted", "turnId": f"turn-{self.turns}"})
            elif kind == "stopped":
                assert self._nursery is not None
                await self._nursery.start(self._speak, bytes(self._vad.utterance))

    async def _speak(self, audio: bytes, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The assistant's reply: the caller's words back, paced like speech."""
        turn = self.turns
        self.turns += 1
        with trio.CancelScope() as scope:
            self._reply = scope
            task_status.started()
            await self.send_json({"type": "transcript", "role": "user", "transcriptType": "final",
                                  "transcript": f"caller turn {turn} ({len(audio) // 8} ms)"})
            await self.send_json({"type": "speech-update", "status": "started", "role": "assistant", "turn": turn})
            for i in range(0, len(audio), 160):
                await self.send_audio(audio[i:i + 160])
                await trio.sleep(self.fake.pace_s)
            await self.send_json({"type": "speech-update", "status": "stopped", "role": "assistant", "turn": turn})
        if self._reply is scope:
            self._reply = None


class FakeVapi:
    def __init__(self, api_key: str = API_KEY, *, assistant_ids: set[str] | None = None, echo: bool = True,
                 silence_ms: int = 200, pace_s: float = 0.02, wrap: bool = False) -> None:
        self.api_key = api_key
        self.assistant_ids = assistant_ids or {ASSISTANT_ID}
        self.echo, self.silence_ms, self.pace_s, self.wrap = echo, silence_ms, pace_s, wrap
        self.calls: list[FakeVapiCall] = []
        self.requests: list[dict[str, Any]] = []
        self.recorder = Recorder()
        #: Answer the next ``POST /call`` with this (status, body) instead.
        self.fail_next: tuple[int, dict[str, Any]] | None = None
        #: Never answer WebSocket upgrades (handshake timeout tests); ``upgrades`` counts attempts.
        self.stall_upgrades = False
        self.upgrades = 0
        self.url = ""

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        async with serve_asgi(self.app) as url:
            self.url = url
            yield url

    async def wait_calls(self, n: int, timeout: float = 5.0) -> FakeVapiCall:
        """Wait until ``n`` calls exist and the n-th is connected; return it."""
        await self.recorder.wait_for(lambda: len(self.calls) >= n and self.calls[n - 1].connected.is_set(), timeout)
        return self.calls[n - 1]

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raw = await read_body(receive)
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        authorized = headers.get("authorization") == f"Bearer {self.api_key}"
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.requests.append({"method": scope["method"], "path": scope["path"], "authorized": authorized,
                              "content_type": headers.get("content-type", ""), "body": body})
        self.recorder.changed()
        if (scope["method"], scope["path"]) != ("POST", "/call"):
            await respond(send, 404, {"message": f"Cannot {scope['method']} {scope['path']}", "error": "Not Found",
                                      "statusCode": 404})
        elif not authorized:
            await respond(send, 401, {"message": "Invalid Key. Hot tip, you may be using the private key "
                                      "instead of the public key, or vice versa.", "error": "Unauthorized",
                                      "statusCode": 401})
        elif self.fail_next is not None:
            (status, data), self.fail_next = self.fail_next, None
            await respond(send, status, data)
        elif problems := check_body(body, self.assistant_ids):
            await respond(send, 400, {"message": problems, "error": "Bad Request", "statusCode": 400})
        else:
            call_id = secrets.token_hex(4) + "-" + secrets.token_hex(2) + "-4" + secrets.token_hex(2)[1:] + "-" \
                + secrets.token_hex(8)
            ws_url = "ws://" + self.url.removeprefix("http://") + f"/{call_id}/transport"
            self.calls.append(FakeVapiCall(self, call_id, body, ws_url))
            self.recorder.changed()
            await respond(send, 201, {"id": call_id, "assistantId": body.get("assistantId"),
                                      "type": "vapi.websocketCall", "status": "queued",
                                      "transport": {"provider": "vapi.websocket", "websocketCallUrl": ws_url}})

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        self.upgrades += 1
        self.recorder.changed()
        if self.stall_upgrades:
            await receive()  # until the client gives up (websocket.disconnect)
            return
        call = next((c for c in self.calls if scope["path"] == f"/{c.id}/transport"), None)
        if call is None or call.connected.is_set():
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return
        await call.serve(receive, send)
