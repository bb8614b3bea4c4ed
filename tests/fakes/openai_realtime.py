"""A fake OpenAI Realtime (GA) WebSocket server, as strict as the real one where it matters.

* Upgrade: ``/v1/realtime?model=…`` with ``Authorization: Bearer <key>``
  (wrong key → HTTP 401 with OpenAI's error body; an ``OpenAI-Beta`` header
  → 400: the beta is shut off).
* ``session.created`` at once; the first client message must be a GA
  ``session.update`` (``type: "realtime"``, ``audio/pcmu`` in and out, no
  beta keys such as ``input_audio_format``), answered by ``session.updated``.
* ``input_audio_buffer.append`` feeds a server-VAD look-alike on the μ-law
  energy: ``speech_started`` / ``speech_stopped`` / ``committed``, then a
  response: ``response.output_audio.delta`` chunks (a tone, or the caller's
  words echoed), ``…output_audio.done``, transcript, ``response.done``.
  Speech during a response cancels it (``interrupt_response`` defaults to on).
* ``response.cancel`` without an active response and a
  ``conversation.item.truncate`` beyond the audio generated for that item
  are answered with ``error`` events, like the real server.
* Knobs, settable any time: ``reject_status``, ``auth_error_event``,
  ``drop_after_appends`` (one-shot), ``function_call`` (one, or a list: parallel calls), ``omit_function_name``,
  ``pace_s``.  Every client message is recorded (``received``).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from fakes import EnergyVad, WsFake, tone

API_KEY = "sk-test-fake-0123456789abcdefABCDEF"
CLIENT_TYPES = frozenset({
    "session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
    "conversation.item.create", "conversation.item.retrieve", "conversation.item.truncate",
    "conversation.item.delete", "response.create", "response.cancel",
})
BETA_SESSION_KEYS = frozenset({"input_audio_format", "output_audio_format", "modalities", "turn_detection", "voice"})


@dataclass
class _Response:
    id: str
    item_id: str
    cancelled: bool = False
    done: trio.Event = field(default_factory=trio.Event)


class FakeRealtime(WsFake):
    def __init__(self, api_key: str = API_KEY, *, reply_ms: int = 800, chunk_ms: int = 100, echo: bool = False,
                 pace_s: float = 0.0) -> None:
        super().__init__()
        self.api_key = api_key
        self.reply_ms, self.chunk_ms, self.echo, self.pace_s = reply_ms, chunk_ms, echo, pace_s
        self.reject_status: int | None = None
        self.auth_error_event = False
        self.drop_after_appends: int | None = None  # one-shot: cleared when it fires
        self.drops = 0
        #: (name, arguments JSON) for the next response, or a list of them (parallel function calls)
        self.function_call: tuple[str, str] | list[tuple[str, str]] | None = None
        self.omit_function_name = False
        self.errors_sent: list[dict[str, Any]] = []
        self.sessions: list[dict[str, Any]] = []  # every accepted session.update's session

    async def serve(self, nursery: trio.Nursery) -> str:
        return await self.listen(nursery, "/v1/realtime")

    async def _handle(self, request: WebSocketRequest) -> None:
        headers = self.upgrade(request)
        query = parse_qs(urlsplit(request.path).query)
        if urlsplit(request.path).path != "/v1/realtime" or not query.get("model"):
            await request.reject(404, body=b'{"error":{"message":"Not found","code":"not_found"}}')
            return
        if "openai-beta" in headers:
            await request.reject(400, body=b'{"error":{"message":"The Realtime beta has been shut off."}}')
            return
        if self.reject_status is not None:
            await request.reject(self.reject_status, body=b'{"error":{"message":"refused by test"}}')
            return
        if headers.get("authorization") != f"Bearer {self.api_key}" and not self.auth_error_event:
            shown = headers.get("authorization", "").removeprefix("Bearer ")
            body = {"error": {"message": f"Incorrect API key provided: {shown[:3]}***{shown[-4:]}.",
                              "type": "invalid_request_error", "code": "invalid_api_key"}}
            await request.reject(401, body=json.dumps(body).encode())
            return
        ws = await request.accept()
        await self.connected(lambda: _Conn(self, ws, query["model"][0], self.connections).run())

    def sent_error(self, error: dict[str, Any]) -> None:
        self.errors_sent.append(error)
        self.changed()


class _Conn:
    def __init__(self, fake: FakeRealtime, ws: WebSocketConnection, model: str, number: int) -> None:
        self.fake, self.ws, self.model, self.number = fake, ws, model, number
        self.session: dict[str, Any] | None = None
        self.vad = EnergyVad()
        self.appends = 0
        self.ids = itertools.count(1)
        self.item_ms: dict[str, int] = {}
        self.calls: set[str] = set()
        self.active: _Response | None = None
        self.nursery: trio.Nursery | None = None

    def _id(self, prefix: str) -> str:
        return f"{prefix}_c{self.number}_{next(self.ids)}"

    async def send(self, event: dict[str, Any]) -> None:
        event = {"event_id": self._id("event"), **event}
        try:
            await self.ws.send_message(json.dumps(event))
        except ConnectionClosed:
            pass

    async def error(self, message: str, code: str, type_: str = "invalid_request_error", **extra: Any) -> None:
        err = {"type": type_, "code": code, "message": message, "param": None, "event_id": None, **extra}
        self.fake.sent_error(err)
        await self.send({"type": "error", "error": err})

    async def run(self) -> None:
        await self.send({"type": "session.created", "session": {
            "type": "realtime", "object": "realtime.session", "id": self._id("sess"), "model": self.model,
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}},
                      "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}}}})
        if self.fake.auth_error_event:
            await self.error("Incorrect API key provided.", "invalid_api_key")
            await self.ws.aclose(1008, "invalid api key")
            return
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            try:
                while True:
                    await self.handle(await self.ws.get_message())
            except ConnectionClosed:
                pass
            except _Drop:
                # An abrupt network failure: no close frame, just a dead TCP stream.
                await self.ws._stream.aclose()  # noqa: SLF001 (a fake may be rude)
            nursery.cancel_scope.cancel()

    async def handle(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            await self.error("Binary frames are not supported.", "invalid_value")
            return
        try:
            event = json.loads(raw)
        except ValueError:
            await self.error("Invalid JSON.", "invalid_json")
            return
        self.fake.record(event)
        kind = event.get("type")
        if kind not in CLIENT_TYPES:
            await self.error(f"Invalid value: '{kind}'. Supported values are: {sorted(CLIENT_TYPES)}.",
                             "invalid_value")
            return
        if self.session is None and kind != "session.update":
            await self.error("The first message must be session.update (fake server rule).", "session_not_configured")
            return
        await getattr(self, "on_" + kind.replace(".", "_"))(event)

    # -- client events --

    async def on_session_update(self, event: dict[str, Any]) -> None:
        s = event.get("session")
        problem = _session_problem(s)
        if problem:
            await self.error(problem, "invalid_value")
            return
        assert isinstance(s, dict)
        self.session = s
        self.fake.sessions.append(s)
        await self.send({"type": "session.updated", "session": {"object": "realtime.session", **s}})

    async def on_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        try:
            audio = base64.b64decode(event.get("audio", ""), validate=True)
        except (binascii.Error, ValueError, TypeError):
            await self.error("Invalid 'audio'. Expected base64-encoded audio.", "invalid_value")
            return
        self.appends += 1
        if self.fake.drop_after_appends is not None and self.appends >= self.fake.drop_after_appends:
            self.fake.drop_after_appends = None  # one-shot: the reconnect may succeed
            self.fake.drops += 1
            raise _Drop
        for what, at_ms in self.vad.feed(audio):
            await (self.speech_started(at_ms) if what == "started" else self.speech_stopped(at_ms))

    async def speech_started(self, at_ms: int) -> None:
        await self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": at_ms,
                         "item_id": self._id("item_user")})
        td = (((self.session or {}).get("audio") or {}).get("input") or {}).get("turn_detection") or {}
        if self.active is not None and td.get("interrupt_response", True):
            self.active.cancelled = True

    async def speech_stopped(self, at_ms: int) -> None:
        item = self._id("item_user")
        await self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": at_ms, "item_id": item})
        await self.send({"type": "input_audio_buffer.committed", "previous_item_id": None, "item_id": item})
        await self.send({"type": "conversation.item.added", "previous_item_id": None, "item": {
            "id": item, "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}]}})
        if self.active is None:
            self.start_response(bytes(self.vad.utterance) if self.fake.echo else tone(self.fake.reply_ms))

    async def on_response_cancel(self, event: dict[str, Any]) -> None:
        if self.active is None or self.active.cancelled:
            await self.error("Cancellation failed: no active response found", "response_cancel_not_active")
            return
        self.active.cancelled = True

    async def on_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        item_id, index, end = event.get("item_id"), event.get("content_index"), event.get("audio_end_ms")
        if not isinstance(item_id, str) or index != 0 or not isinstance(end, int) or isinstance(end, bool) or end < 0:
            await self.error("Invalid truncate: item_id, content_index 0 and audio_end_ms >= 0 required.",
                             "invalid_value")
        elif item_id not in self.item_ms:
            await self.error(f"Item with item_id not found: {item_id}", "item_not_found")
        elif end > self.item_ms[item_id]:
            await self.error(f"Audio content of {self.item_ms[item_id]}ms is already shorter than {end}ms",
                             "invalid_value")
        else:
            await self.send({"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0,
                             "audio_end_ms": end})

    async def on_conversation_item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") not in ("message", "function_call_output"):
            await self.error("Invalid item.", "invalid_value")
            return
        if item["type"] == "function_call_output" and item.get("call_id") not in self.calls:
            await self.error(f"Tool call ID '{item.get('call_id')}' not found in conversation.", "invalid_tool_call_id")
            return
        if item["type"] == "function_call_output" and not isinstance(item.get("output"), str):
            await self.error("Invalid 'item.output': expected a string.", "invalid_type")
            return
        await self.send({"type": "conversation.item.added", "previous_item_id": None,
                         "item": {"id": self._id("item"), **item}})

    async def on_response_create(self, event: dict[str, Any]) -> None:
        if self.active is not None:
            await self.error("Conversation already has an active response", "conversation_already_has_active_response")
            return
        self.start_response(tone(self.fake.reply_ms // 2, freq=660.0))

    async def on_input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        pass

    on_input_audio_buffer_clear = on_input_audio_buffer_commit
    on_conversation_item_retrieve = on_conversation_item_delete = on_input_audio_buffer_commit

    # -- responses --

    def start_response(self, audio: bytes) -> None:
        assert self.nursery is not None
        self.active = _Response(self._id("resp"), self._id("item"))
        self.nursery.start_soon(self._respond, self.active, audio)

    async def _respond(self, r: _Response, audio: bytes) -> None:
        base = {"response_id": r.id, "item_id": r.item_id, "output_index": 0, "content_index": 0}
        item = {"id": r.item_id, "object": "realtime.item", "type": "message", "role": "assistant",
                "status": "in_progress", "content": []}
        await self.send({"type": "response.created", "response": {
            "id": r.id, "object": "realtime.response", "status": "in_progress", "output": []}})
        await self.send({"type": "response.output_item.added", "response_id": r.id, "output_index": 0, "item": item})
        await self.send({"type": "conversation.item.added", "previous_item_id": None, "item": item})
        await self.send({"type": "response.content_part.added", **base, "part": {"type": "audio", "transcript": ""}})
        self.item_ms[r.item_id] = 0
        step = 8 * self.fake.chunk_ms
        for i in range(0, len(audio), step):
            if r.cancelled:
                break
            chunk = audio[i:i + step]
            await self.send({"type": "response.output_audio.delta", **base,
                             "delta": base64.b64encode(chunk).decode()})
            self.item_ms[r.item_id] += len(chunk) // 8
            await trio.sleep(self.fake.pace_s)
        status = "cancelled" if r.cancelled else "completed"
        transcript = f"({self.item_ms[r.item_id]} ms of reply)"
        await self.send({"type": "response.output_audio.done", **base})
        await self.send({"type": "response.output_audio_transcript.done", **base, "transcript": transcript})
        await self.send({"type": "response.content_part.done", **base,
                         "part": {"type": "audio", "transcript": transcript}})
        done_item = {**item, "status": "incomplete" if r.cancelled else "completed",
                     "content": [{"type": "output_audio", "transcript": transcript}]}
        await self.send({"type": "response.output_item.done", "response_id": r.id, "output_index": 0,
                         "item": done_item})
        output = [done_item]
        if self.fake.function_call is not None and not r.cancelled:
            calls = self.fake.function_call if isinstance(self.fake.function_call, list) else [self.fake.function_call]
            for n, (name, arguments) in enumerate(calls):
                output.append(await self._function_call(r, name, arguments, index=1 + n))
            self.fake.function_call = None
        self.active = None
        await self.send({"type": "response.done", "response": {
            "id": r.id, "object": "realtime.response", "status": status, "output": output,
            "status_details": {"type": status, "reason": "turn_detected"} if r.cancelled else None,
            # The GA shape of usage; audio tokens here are 1 per 100 ms generated (a fake's rate).
            "usage": {"total_tokens": 10 + self.item_ms[r.item_id] // 100, "input_tokens": 10,
                      "output_tokens": self.item_ms[r.item_id] // 100,
                      "input_token_details": {"text_tokens": 10, "audio_tokens": 0, "cached_tokens": 0},
                      "output_token_details": {"text_tokens": 0, "audio_tokens": self.item_ms[r.item_id] // 100}}}})
        r.done.set()

    async def _function_call(self, r: _Response, name: str, arguments: str, index: int = 1) -> dict[str, Any]:
        call_id, item_id = self._id("call"), self._id("item_fc")
        self.calls.add(call_id)
        item = {"id": item_id, "object": "realtime.item", "type": "function_call", "status": "in_progress",
                "call_id": call_id, "name": name, "arguments": ""}
        base = {"response_id": r.id, "item_id": item_id, "output_index": index, "call_id": call_id}
        await self.send({"type": "response.output_item.added", "response_id": r.id, "output_index": index,
                         "item": item})
        await self.send({"type": "response.function_call_arguments.delta", **base, "delta": arguments})
        done = {"type": "response.function_call_arguments.done", **base, "arguments": arguments}
        if not self.fake.omit_function_name:
            done["name"] = name
        await self.send(done)
        item = {**item, "status": "completed", "arguments": arguments}
        await self.send({"type": "response.output_item.done", "response_id": r.id, "output_index": index,
                         "item": item})
        return item


class _Drop(Exception):
    """Raised inside a connection to kill its TCP stream without a close frame."""


def _session_problem(s: Any) -> str | None:
    """Why a ``session.update`` payload is not a valid GA realtime session (None: it is)."""
    if not isinstance(s, dict):
        return "Missing required parameter: 'session'."
    beta = BETA_SESSION_KEYS & s.keys()
    if beta:
        return f"Unknown parameter: 'session.{sorted(beta)[0]}'."
    if s.get("type") != "realtime":
        return "Missing required parameter: 'session.type' (expected 'realtime')."
    audio = s.get("audio")
    if not isinstance(audio, dict):
        return "Fake server requires 'session.audio' with input and output formats."
    for direction in ("input", "output"):
        fmt = (audio.get(direction) or {}).get("format")
        if not isinstance(fmt, dict) or fmt.get("type") != "audio/pcmu":
            return f"Fake server requires session.audio.{direction}.format.type 'audio/pcmu', got {fmt!r}."
    for tool in s.get("tools", []):
        if not (isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("name"), str)
                and isinstance(tool.get("parameters"), dict)):
            return f"Invalid tool: {tool!r}."
    return None
