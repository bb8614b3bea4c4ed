"""VAPI's ``vapi.websocket`` transport as a sans-IO message layer.

No sockets, no clock: :func:`build_create_call` / :func:`parse_create_call`
cover ``POST {base_url}/call``; :class:`VapiStream` turns what arrives on the
call's WebSocket into :data:`~twibridge.agents.base.AgentEvent` s; the
``*_message`` builders make what we send.  ``agents/vapi.py`` does the I/O.

The rules this module encodes (agent-providers.md, VAPI section):

* Audio is binary frames both ways, μ-law 8 kHz raw (negotiated in the
  ``transport.audioFormat`` of the create-call body), passed through untouched.
* VAPI's audio carries no item ids, but the bridge cancels replies *by item*.
  So items are synthesised per assistant turn: a new item starts with the
  first audio after ``user-interrupted`` or after the assistant's
  ``speech-update`` stopped (which also yields ``ReplyDone``), and after the
  bridge's own barge-in (:meth:`VapiStream.interrupted_locally`) — otherwise
  the rest of a turn VAPI keeps sending would be dropped as "cancelled".
* JSON control messages come flat or wrapped as ``{"message": {...}}``
  (docs examples vs the OpenAPI schema); both parse.  We send flat.
* ``hang`` means the assistant is *stalled*, never a hang-up: it becomes an
  :class:`AgentNotice`; :data:`MAX_CONSECUTIVE_HANGS` in a row without any
  assistant audio in between raise :class:`AgentFailed` so the caller gets
  the fallback instead of dead air.
* The first terminal request wins: after a hang-up or transfer request,
  VAPI's own ``status-update`` ended / ``end-of-call-report`` must not turn a
  transfer into a hang-up, so later terminal messages are ignored.
* A VAPI call that ends with an error reason (``pipeline-error-…``) is the
  provider failing, not the assistant hanging up: :class:`AgentDisconnected`,
  so the supervisor reconnects (and falls back if that keeps failing).
* The ``websocketCallUrl`` (and the call id inside it) is a credential:
  :class:`VapiCall` never shows it in a repr, and no error message quotes it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

# POST /call lives in vapi_call.py; its names are this module's too.
from twibridge.agents.vapi_call import CALL_PATH as CALL_PATH
from twibridge.agents.vapi_call import CLIENT_MESSAGES as CLIENT_MESSAGES
from twibridge.agents.vapi_call import MAX_ERROR_CHARS as MAX_ERROR_CHARS
from twibridge.agents.vapi_call import TRANSPORT as TRANSPORT
from twibridge.agents.vapi_call import VapiCall as VapiCall
from twibridge.agents.vapi_call import build_create_call as build_create_call
from twibridge.agents.vapi_call import error_text as error_text
from twibridge.agents.vapi_call import parse_create_call as parse_create_call
from twibridge.agents.base import (
    summary_of,
    AgentDisconnected, AgentEvent, AgentFailed, AgentNotice, AgentProtocolError, AudioOut, CallInfo,
    HangupRequest, ReplyDone, SpeechStarted, Transcript, TransferRequest,
)

#: Stalls in a row (no assistant audio between them) before we give up.
MAX_CONSECUTIVE_HANGS = 3
#: Custom tool names the assistant calls to end / transfer (plus VAPI's built-in names).
END_CALL_TOOLS = frozenset({"end_call", "endCall"})
TRANSFER_TOOLS = frozenset({"transfer_to_human", "transferCall"})
#: Bound on tool calls read from one message (only the first terminal one matters).
MAX_TOOL_CALLS = 16

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SILENCE = b"\xff\x7f"  # μ-law +0 / -0


def _dump(msg: Mapping[str, Any]) -> str:
    return json.dumps(msg, separators=(",", ":"))


def end_call_message() -> str:
    """Ask VAPI to end its side of the call (``hangup`` in older docs)."""
    return _dump({"type": "end-call"})


def say_message(content: str, end_call_after: bool = False) -> str:
    return _dump({"type": "say", "content": content, "endCallAfterSpoken": end_call_after})


def add_message(role: str, content: str, trigger_response: bool = False) -> str:
    """Add to the conversation without (by default) making the assistant speak."""
    return _dump({"type": "add-message", "message": {"role": role, "content": content},
                  "triggerResponseEnabled": trigger_response})


# -- messages we receive -------------------------------------------------------------


def unwrap(data: Any) -> dict[str, Any]:
    """A control message as a flat dict (``{"message": {...}}`` unwrapped)."""
    if not isinstance(data, dict):
        raise AgentProtocolError(f"vapi: control message is not a JSON object ({type(data).__name__})")
    inner = data.get("message")
    msg: dict[str, Any] = inner if "type" not in data and isinstance(inner, dict) else data
    if not isinstance(msg.get("type"), str):
        raise AgentProtocolError("vapi: control message without a type")
    return msg


def _tool_calls(msg: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(name, arguments)`` of each tool call, in any of VAPI's shapes.

    ``toolCallList`` items are ``{id, name, parameters}`` (docs) or
    ``{id, type: "function", function: {name, arguments}}`` (schema) with
    ``arguments`` an object or a JSON string; ``toolWithToolCallList`` wraps
    the latter as ``{toolCall: {...}}``.
    """
    items = msg.get("toolCallList")
    if not isinstance(items, list):
        wrapped = msg.get("toolWithToolCallList")
        items = [w.get("toolCall") for w in wrapped if isinstance(w, dict)] if isinstance(wrapped, list) else []
    out = []
    for item in items[:MAX_TOOL_CALLS]:
        if not isinstance(item, dict):
            continue
        fn: dict[str, Any] = item["function"] if isinstance(item.get("function"), dict) else {}
        name = item.get("name") or fn.get("name")
        args: Any = item.get("parameters") or item.get("arguments") or fn.get("arguments") or {}
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                args = {}
        if isinstance(name, str):
            out.append((name, args if isinstance(args, dict) else {}))
    return out


def declared_parameters(msg: Mapping[str, Any]) -> dict[str, set[str]]:
    """Tool name → the parameters its config declares (``toolWithToolCallList[].function.parameters``)."""
    out: dict[str, set[str]] = {}
    wrapped = msg.get("toolWithToolCallList")
    for w in wrapped[:MAX_TOOL_CALLS] if isinstance(wrapped, list) else []:
        fn = w.get("function") if isinstance(w, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("parameters"), dict):
            continue
        props, name = fn["parameters"].get("properties"), w.get("name") or fn.get("name")
        if isinstance(name, str) and isinstance(props, dict):
            out.setdefault(name, set()).update(k for k in props if isinstance(k, str))
    return out


def transfer_target(args: Mapping[str, Any]) -> str | None:
    """An E.164 number from a transfer request, else None (→ ``[transfer] to``).

    The model chose it: anything but a plain E.164 number falls back to the configured human."""
    for key in ("to", "number", "phoneNumber", "destination"):
        value = args.get(key)
        if isinstance(value, dict):
            value = value.get("number")
        if isinstance(value, str) and _E164.match(value.strip()):
            return value.strip()
    return None


def is_silence(frame: bytes) -> bool:
    """Digital silence only (μ-law ±0): never mistakes quiet speech for nothing."""
    return not frame.strip(_SILENCE)


class VapiStream:
    """One VAPI socket's state: turns → item ids, stalls, the first terminal request.

    Feed it every frame (:meth:`audio`, :meth:`text`); it returns the events
    for the bridge.  Counters are for logs and call summaries.
    """

    def __init__(self, item_prefix: str = "vapi") -> None:
        self.item_prefix = item_prefix
        self.turns = 0
        self.item: str | None = None
        self.speaking = False
        self.ending: str | None = None  # "hangup" | "transfer" once requested
        self.hangs = 0
        self.consecutive_hangs = 0
        self.interruptions = 0
        self.silence_dropped = 0
        self.ignored: dict[str, int] = {}

    # -- audio -------------------------------------------------------------------

    def audio(self, data: bytes) -> list[AgentEvent]:
        if not data:
            return []
        if not self.speaking and is_silence(data):
            # Between turns, silence is not a reply: as an item it would keep
            # the bridge believing the assistant talks (gating barge-in).
            self.silence_dropped += 1
            return []
        self.speaking = True
        self.consecutive_hangs = 0
        if self.item is None:
            self.turns += 1
            self.item = f"{self.item_prefix}-{self.turns}"
        return [AudioOut(self.item, data)]

    def interrupted_locally(self) -> None:
        """The bridge cut the assistant off itself: later audio is a new item."""
        self.item = None
        self.speaking = False

    def _end_item(self) -> list[AgentEvent]:
        item, self.item, self.speaking = self.item, None, False
        return [ReplyDone(item)] if item is not None else []

    # -- control messages --------------------------------------------------------------

    def text(self, raw: str | bytes) -> list[AgentEvent]:
        """One JSON control message → events.

        Raises:
            AgentProtocolError: not JSON, not an object, or no ``type``.
            AgentDisconnected: VAPI ended the call with an error reason.
            AgentFailed: the assistant stalled :data:`MAX_CONSECUTIVE_HANGS` times in a row.
        """
        try:
            data = json.loads(raw)
        except ValueError:
            raise AgentProtocolError("vapi: control message is not JSON") from None
        msg = unwrap(data)
        kind = msg["type"]
        handler = _HANDLERS.get(kind)
        if handler is None:
            self.ignored[kind] = self.ignored.get(kind, 0) + 1
            return []
        return handler(self, msg)

    def _user_interrupted(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        self.interruptions += 1
        self.item, self.speaking = None, False
        return [SpeechStarted()]

    def _speech_update(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        if msg.get("role") != "assistant":
            return []  # user speech: VAPI says user-interrupted when it matters
        if msg.get("status") == "started":
            # Audio may precede this message: keep an open item, do not split it.
            self.speaking = True
            return []
        if msg.get("status") == "stopped":
            return self._end_item()
        return []

    def _transcript(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        if msg.get("transcriptType", "final") != "final":
            return []
        text, role = msg.get("transcript"), msg.get("role")
        if not isinstance(text, str) or not text.strip() or role not in ("user", "assistant"):
            return []
        return [Transcript(role=role, text=text.strip())]

    def _hang(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        self.hangs += 1
        self.consecutive_hangs += 1
        if self.consecutive_hangs >= MAX_CONSECUTIVE_HANGS:
            raise AgentFailed(f"vapi assistant stalled: {self.consecutive_hangs} hang notices in a row")
        return [AgentNotice(f"vapi assistant stalled (hang {self.consecutive_hangs} in a row, "
                            f"{self.hangs} this session)", code="vapi.hang")]

    def _terminal(self, kind: str, event: AgentEvent) -> list[AgentEvent]:
        if self.ending is not None:
            return []
        self.ending = kind
        return [*self._end_item(), event]

    def _tool_calls_msg(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        declared = declared_parameters(msg)
        for name, args in _tool_calls(msg):
            if name in END_CALL_TOOLS:
                return self._terminal("hangup", HangupRequest(reason=f"vapi tool {name}"))
            if name in TRANSFER_TOOLS:  # a model-written target counts only if the tool declares it
                allowed = declared.get(name, set())
                return self._terminal("transfer", TransferRequest(
                    to=transfer_target({k: v for k, v in args.items() if k in allowed}), summary=summary_of(args)))
        return []  # other tools belong to the assistant's server URL

    def _transfer_update(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        dest = msg.get("destination")
        if isinstance(dest, dict) and dest.get("type") not in (None, "number"):
            # A squad hand-off (type "assistant") is not a phone transfer;
            # a SIP URI cannot go to <Dial><Number>.
            return [AgentNotice(f"vapi transfer to a {dest.get('type')!s:.20} destination ignored",
                                code="vapi.transfer_unsupported")]
        to = transfer_target({"destination": dest}) if dest is not None else None
        return self._terminal("transfer", TransferRequest(to=to, summary=summary_of(msg)))

    def _ended(self, msg: Mapping[str, Any], source: str) -> list[AgentEvent]:
        reason = str(msg.get("endedReason") or "")[:80]
        if self.ending is None and ("error" in reason or "failed" in reason):
            raise AgentDisconnected(f"vapi ended the call: {reason}")
        return self._terminal("hangup", HangupRequest(reason=f"vapi {source}" + (f": {reason}" if reason else "")))

    def _status_update(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        if msg.get("status") != "ended":
            return []
        return self._ended(msg, "ended the call")

    def _end_of_call_report(self, msg: Mapping[str, Any]) -> list[AgentEvent]:
        return self._ended(msg, "end-of-call-report")


_HANDLERS = {
    "user-interrupted": VapiStream._user_interrupted,
    "speech-update": VapiStream._speech_update,
    "transcript": VapiStream._transcript,
    "hang": VapiStream._hang,
    "tool-calls": VapiStream._tool_calls_msg,
    "transfer-update": VapiStream._transfer_update,
    "status-update": VapiStream._status_update,
    "end-of-call-report": VapiStream._end_of_call_report,
}
