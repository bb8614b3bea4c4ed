"""OpenAI Realtime (GA) messages, sans-IO: text in, events out; calls in, text out.

Only the GA protocol: ``session.update`` with ``session.type = "realtime"``,
``audio/pcmu`` both ways (μ-law 8 kHz passes through untouched) and the
``response.output_audio.*`` event names.  The retired beta shapes
(``g711_ulaw``, ``response.audio.*``, the ``OpenAI-Beta`` header) are never
produced; a beta-only event from the server is simply an unknown type.

State (one :class:`RealtimeConnection` per WebSocket), kept because barge-in
and tools need it:

* ``ready`` turns true at ``session.updated``.  Any ``error`` before it is
  about our ``session.update`` (or the key): retrying cannot help, so it
  raises :class:`AgentFailed`.
* the active response (``response.created`` … ``response.done``): on
  :meth:`~RealtimeConnection.interrupt` it joins ``cancelled`` and its
  in-flight deltas are dropped until its ``response.done``.
* audio received per item (ms): ``conversation.item.truncate`` must not
  overshoot what the server generated (it rejects that), and items from an
  earlier connection do not exist here, so truncating them is skipped.
* function calls already answered, by ``call_id``: the call arrives in
  ``response.function_call_arguments.done`` (with ``name`` in GA) and again
  in ``response.output_item.done``; whichever names the function first wins.

Tool answers are queued for the I/O layer (:meth:`~RealtimeConnection.data_to_send`),
the wsproto way, so the session answers OpenAI *before* the bridge acts.
Errors: the server broke the protocol → :class:`AgentProtocolError`;
it refuses us for good (bad key, no quota, unknown model) → :class:`AgentFailed`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable

from twibridge.agents.base import (
    summary_of,
    MAX_ITEM_ID_CHARS, MAX_NOTICE_CHARS, MAX_TRANSCRIPT_CHARS,
    AgentEvent, AgentFailed, AgentNotice, AgentProtocolError, AudioOut, HangupRequest, ReplyDone,
    SpeechStarted, ToolCall, ToolSpec, Transcript, TransferRequest, Usage, clip,
)

from twibridge.agents.openai_messages import (  # noqa: F401 (re-exported: the protocol's public names)
    AUDIO_FORMAT, BYTES_PER_MS, MAX_TRACKED_ITEMS, FATAL_ERROR_CODES, FATAL_ERROR_TYPES, QUIET_ERROR_CODES, END_CALL, TRANSFER, TOOLS, _dump, build_session_update, build_audio_append, build_response_cancel, build_truncate, build_function_call_output, build_response_create, build_system_item, greeting_instructions, build_history_item, build_transfer_failed,
)


def parse_event(raw: str | bytes) -> dict[str, Any]:
    """One server message → its JSON object with a string ``type``."""
    if isinstance(raw, bytes):
        raise AgentProtocolError("openai: unexpected binary message")
    try:
        event = json.loads(raw)
    except ValueError:
        raise AgentProtocolError("openai: malformed JSON") from None
    if not isinstance(event, dict):
        raise AgentProtocolError("openai: message is not a JSON object")
    if not isinstance(event.get("type"), str):
        raise AgentProtocolError("openai: message without a string 'type'")
    return event


def _str(event: dict[str, Any], key: str) -> str:
    value = event.get(key)
    if not isinstance(value, str):
        raise AgentProtocolError(f"openai: {event.get('type')}: '{key}' must be a string")
    return value


def _obj(event: dict[str, Any], key: str) -> dict[str, Any]:
    value = event.get(key)
    if not isinstance(value, dict):
        raise AgentProtocolError(f"openai: {event.get('type')}: '{key}' must be an object")
    return value


def _opt_int(event: dict[str, Any], key: str) -> int | None:
    value = event.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise AgentProtocolError(f"openai: {event.get('type')}: '{key}' must be an integer")
    return value


def _arguments(raw: Any) -> dict[str, Any]:
    """The model writes the arguments; bad JSON from it is not a protocol error."""
    try:
        args = json.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        return {}
    return args if isinstance(args, dict) else {}


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``error`` event's payload."""

    type: str
    code: str
    message: str

    @property
    def fatal(self) -> bool:
        return self.code in FATAL_ERROR_CODES or self.type in FATAL_ERROR_TYPES


def parse_error(event: dict[str, Any]) -> ServerError:
    err = _obj(event, "error")
    return ServerError(type=str(err.get("type") or ""), code=str(err.get("code") or ""),
                       message=str(err.get("message") or ""))


def heard_text(text: str, heard_ms: int, total_ms: int) -> str:
    """``text`` cut where the audio was cut: the share heard, back to a word boundary, plus "…".

    The Realtime API gives the cut as audio ms only (the text has no timings),
    so the cut is proportional: what the caller heard, never more.
    """
    if total_ms <= 0 or heard_ms >= total_ms:
        return text
    keep = int(len(text) * max(0, heard_ms) / total_ms)
    if keep >= len(text):
        return text
    head = text[:keep]
    if keep and not text[keep].isspace():
        head = head.rsplit(" ", 1)[0] if " " in head else ""
    return head.rstrip(" ,;:") + "…"


# -- the connection ------------------------------------------------------------


def _item_id(event: dict[str, Any]) -> str:
    item_id = _str(event, "item_id")
    if len(item_id) > MAX_ITEM_ID_CHARS:
        raise AgentProtocolError(f"openai: {event['type']}: 'item_id' longer than {MAX_ITEM_ID_CHARS} characters")
    return item_id


def _opt_key(event: dict[str, Any], key: str) -> str | None:
    """A string field that may be absent (anything else counts as absent: never a crash)."""
    value = event.get(key)
    return value if isinstance(value, str) else None


def _remember(seen: OrderedDict[str, None], key: str) -> None:
    """Add ``key``; forget the oldest past :data:`MAX_TRACKED_ITEMS`."""
    seen[key] = None
    seen.move_to_end(key)
    while len(seen) > MAX_TRACKED_ITEMS:
        seen.popitem(last=False)


class RealtimeConnection:
    """One Realtime WebSocket's protocol state (see the module docstring)."""

    def __init__(self, model: str, voice: str, instructions: str, *, transcribe_model: str | None = None,
                 tools: tuple[ToolSpec, ...] = ()) -> None:
        self.model, self.voice, self.instructions = model, voice, instructions
        self.transcribe_model = transcribe_model
        self.ready = False
        self.active_response: str | None = None
        # Bounded (a hostile server could name endless responses / calls).
        self.cancelled: OrderedDict[str, None] = OrderedDict()
        self._item_ms: OrderedDict[str, int] = OrderedDict()
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._outbox: list[str] = []
        self.tools = tools
        #: Configured-function calls awaiting their result; ``response.create`` waits for all of
        #: them and for the active response's end (the server refuses a second active response).
        self.tools_pending: set[str] = set()
        self._want_response = False
        self._item_text: OrderedDict[str, str] = OrderedDict()
        self._item_cut: OrderedDict[str, int] = OrderedDict()

    # -- to the server --

    def start(self, history: Iterable[Transcript] = ()) -> list[str]:
        """``session.update``, then past turns as conversation items (after a reconnect)."""
        return [build_session_update(self.model, self.voice, self.instructions, self.transcribe_model, self.tools),
                *(build_history_item(t.role, t.text) for t in history if t.text)]

    def greet(self, greeting: str) -> list[str]:
        """The agent speaks first (``[agent] greeting``): one reply asked for at once."""
        return [build_response_create(greeting_instructions(greeting))] if greeting else []

    def prompt(self, instruction: str) -> list[str]:
        """An idle check-in (or the goodbye): the instruction as a system item, then a reply."""
        return [build_system_item(instruction), build_response_create()]

    def interrupt(self, item_id: str | None, heard_ms: int) -> list[str]:
        """The caller barged in after hearing ``heard_ms`` of ``item_id``.

        Always ``response.cancel`` (a "not active" answer is harmless and
        filtered); ``conversation.item.truncate`` only for an item this
        connection generated, clamped to what it generated, and never at 0
        (nothing heard: an overshoot-free truncate to 0 is pointless and the
        reference advice is to skip it).
        """
        if self.active_response is not None:
            _remember(self.cancelled, self.active_response)
        out = [build_response_cancel()]
        generated = self._item_ms.get(item_id) if item_id is not None else None
        if item_id is not None and generated is not None:
            end_ms = min(max(heard_ms, 0), generated)
            if end_ms > 0:
                out.append(build_truncate(item_id, end_ms))
        return out

    def tool_result(self, call_id: str, output: dict[str, Any]) -> list[str]:
        """A configured function's result: its ``function_call_output``, and ``response.create``
        once no other result is awaited and no response is active (else at that response's end).

        Nothing for a call this connection never asked (it came before a reconnect: the new
        session does not know the ``call_id`` and would refuse it)."""
        if call_id not in self.tools_pending:
            return []
        self.tools_pending.discard(call_id)
        self._want_response = True
        return [build_function_call_output(call_id, output), *self._maybe_respond()]

    def _maybe_respond(self) -> list[str]:
        if self._want_response and not self.tools_pending and self.active_response is None:
            self._want_response = False
            return [build_response_create()]
        return []

    def data_to_send(self) -> list[str]:
        """Answers queued by :meth:`receive` (function call outputs); send them first."""
        out, self._outbox = self._outbox, []
        return out

    # -- from the server --

    def receive(self, raw: str | bytes) -> list[AgentEvent]:
        """Parse one server message into zero or more bridge events.

        Raises:
            AgentProtocolError: not JSON, or a known event with wrong types.
            AgentFailed: a fatal ``error`` (credentials, quota, model), or
                any error before the session was configured.
        """
        event = parse_event(raw)
        kind = event["type"]
        if kind == "response.output_audio.delta":
            return self._audio_delta(event)
        if kind == "input_audio_buffer.speech_started":
            return [SpeechStarted(_opt_int(event, "audio_start_ms"))]
        if kind == "response.created":
            self.active_response = _str(_obj(event, "response"), "id")
            return []
        if kind == "response.done":
            return self._response_done(_obj(event, "response"))
        if kind == "response.output_audio.done":
            if _opt_key(event, "response_id") in self.cancelled:
                return []
            return [ReplyDone(_item_id(event))]
        if kind == "response.output_audio_transcript.done":
            text = clip(_str(event, "transcript"), MAX_TRANSCRIPT_CHARS)
            item = event.get("item_id")
            return self._assistant_text(item if isinstance(item, str) else "", text)
        if kind == "conversation.item.truncated":
            return self._truncated(_str(event, "item_id"), _opt_int(event, "audio_end_ms"))
        if kind == "conversation.item.input_audio_transcription.completed":
            return [Transcript("user", clip(_str(event, "transcript"), MAX_TRANSCRIPT_CHARS))]
        if kind == "response.function_call_arguments.done":
            name = event.get("name")
            if not isinstance(name, str) or not name:
                return []  # older servers: the name comes with response.output_item.done
            return self._function_call(_str(event, "call_id"), name, event.get("arguments"))
        if kind == "response.output_item.done":
            item = _obj(event, "item")
            if item.get("type") != "function_call":
                return []
            return self._function_call(_str(item, "call_id"), _str(item, "name"), item.get("arguments"))
        if kind == "session.updated":
            self.ready = True
            return []
        if kind == "error":
            return self._error(parse_error(event))
        return []  # session.created, rate_limits.updated, conversation.item.*, deltas we do not need…

    def _audio_delta(self, event: dict[str, Any]) -> list[AgentEvent]:
        item_id = _item_id(event)
        delta = _str(event, "delta")
        if _opt_key(event, "response_id") in self.cancelled:
            return []
        try:
            ulaw = base64.b64decode(delta, validate=True)
        except (binascii.Error, ValueError):
            raise AgentProtocolError("openai: response.output_audio.delta: 'delta' is not base64") from None
        self._item_ms[item_id] = self._item_ms.get(item_id, 0) + len(ulaw) // BYTES_PER_MS
        self._item_ms.move_to_end(item_id)
        while len(self._item_ms) > MAX_TRACKED_ITEMS:
            self._item_ms.popitem(last=False)
        return [AudioOut(item_id, ulaw)] if ulaw else []

    def _assistant_text(self, item_id: str, text: str) -> list[AgentEvent]:
        """The reply's full text; cut at once if the caller already barged in on it."""
        self._item_text[item_id] = text
        while len(self._item_text) > MAX_TRACKED_ITEMS:
            self._item_text.popitem(last=False)
        out: list[AgentEvent] = [Transcript("assistant", text, item_id=item_id)]
        cut = self._item_cut.get(item_id)
        if cut is not None:
            out.append(Transcript("assistant", heard_text(text, cut, self._item_ms.get(item_id, 0)),
                                  item_id=item_id, truncated=True))
        return out

    def _truncated(self, item_id: str, audio_end_ms: int | None) -> list[AgentEvent]:
        """The server cut the item at ``audio_end_ms`` (after our truncate): the text as heard."""
        if not item_id or audio_end_ms is None:
            return []
        self._item_cut[item_id] = audio_end_ms
        while len(self._item_cut) > MAX_TRACKED_ITEMS:
            self._item_cut.popitem(last=False)
        text = self._item_text.get(item_id)
        if text is None:
            return []  # its transcript comes later and is cut then
        return [Transcript("assistant", heard_text(text, audio_end_ms, self._item_ms.get(item_id, 0)),
                           item_id=item_id, truncated=True)]

    def _response_done(self, response: dict[str, Any]) -> list[AgentEvent]:
        rid = response.get("id")
        if rid == self.active_response:
            self.active_response = None
        if isinstance(rid, str):
            self.cancelled.pop(rid, None)
        self._outbox += self._maybe_respond()
        usage = response.get("usage")
        if isinstance(usage, dict) and usage:
            return [Usage(usage), *self._response_failed(response)]
        return self._response_failed(response)

    def _response_failed(self, response: dict[str, Any]) -> list[AgentEvent]:
        if response.get("status") == "failed":
            details = response.get("status_details")
            err = details.get("error") if isinstance(details, dict) else None
            message = str(err.get("message", "")) if isinstance(err, dict) else ""
            code = str(err.get("code", "")) if isinstance(err, dict) else ""
            return [AgentNotice(clip(f"response failed: {message or 'no details'}", MAX_NOTICE_CHARS),
                                clip(code or "response_failed", 64))]
        return []

    def _function_call(self, call_id: str, name: str, arguments: Any) -> list[AgentEvent]:
        if call_id in self._answered:
            return []
        _remember(self._answered, call_id)
        args = _arguments(arguments)
        reason = args.get("reason") if isinstance(args.get("reason"), str) else ""
        if name == END_CALL:
            # No response.create: the call is ending, a new reply would be cut off.
            self._outbox.append(build_function_call_output(call_id, {"ok": True, "status": "hanging up"}))
            return [HangupRequest(f"{END_CALL}: {reason}" if reason else END_CALL)]
        if name == TRANSFER:
            # Let the model tell the caller while the bridge dials.
            self._outbox += [build_function_call_output(call_id, {"ok": True, "status": "transferring"}),
                             build_response_create()]
            return [TransferRequest(None, summary_of(args))]
        # Everything else is the bridge's tools executor's (unknown names included: it answers them).
        self.tools_pending.add(call_id)
        return [ToolCall(call_id, name, arguments if isinstance(arguments, str) else json.dumps(arguments))]

    def _error(self, err: ServerError) -> list[AgentEvent]:
        if err.fatal:
            raise AgentFailed(f"openai refused the session: {err.code or err.type}: {err.message}")
        if not self.ready:
            raise AgentFailed(f"openai rejected session.update: {err.code or err.type}: {err.message}")
        if err.code in QUIET_ERROR_CODES:
            return []
        return [AgentNotice(clip(err.message or err.type, MAX_NOTICE_CHARS), clip(err.code or err.type, 64))]
