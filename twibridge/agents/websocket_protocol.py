"""twibridge agent protocol v1, sans-IO: the bridge's side (spec: ``docs/agent-protocol.md``).

Bridge → agent: text ``start`` (once, first), then binary frames of caller
audio (μ-law 8 kHz, 20 ms each) and text ``dtmf`` / ``interrupt`` / ``mark``,
and ``stop`` last.  Agent → bridge: text only: ``audio`` (base64 μ-law with
the ``item_id`` it belongs to), ``reply_done``, ``clear``, ``hangup``,
``transfer``, ``transcript``, ``error``.

Tools (optional for agents, additive within v1): ``start`` lists the
configured functions (``tools``); the agent may send ``tool_call`` and the
bridge answers ``tool_result`` with the same ``call_id`` (the bridge runs
the function, signed, bounded: ``docs/tools.md``).

Why reply audio is JSON and not binary: the bridge must know which reply a
piece of audio belongs to (marks, barge-in and ``interrupt`` all name the
item) and a binary frame cannot say; a self-contained message is also what
every other provider does, needs no ordering rules between frames, and the
base64 cost is small next to the per-message transport cost.

Forward compatibility within v1: both sides ignore unknown message types and
unknown fields; anything that would change the meaning of an existing
message is v2.  The agent refuses a version it cannot speak with a fatal
``error``.

State kept here: items the bridge interrupted, so late audio for them (sent
before the agent saw ``interrupt``) is dropped, not played.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import deque
from typing import Any, Iterable, Mapping

from twibridge.agents.base import (
    summary_of,
    MAX_ITEM_ID_CHARS, MAX_NOTICE_CHARS, MAX_TRANSCRIPT_CHARS,
    AgentEvent, AgentFailed, AgentNotice, AgentProtocolError, AudioOut, CallInfo, HangupRequest,
    ReplyDone, SpeechStarted, ToolCall, Transcript, TransferRequest, clip,
)

PROTOCOL_VERSION = 1
ENCODING, SAMPLE_RATE = "mulaw", 8000
#: Interrupted items remembered for dropping late audio (more is a runaway agent).
MAX_INTERRUPTED_ITEMS = 32
ROLES = frozenset({"user", "assistant"})
DTMF_DIGITS = frozenset("0123456789*#ABCD")


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


# -- bridge → agent -------------------------------------------------------------


def build_start(call: CallInfo, history: Iterable[Transcript] = ()) -> str:
    """``start``; ``tools`` only when the call has configured functions (older agents never see it);
    ``greeting`` (v1.1) only on the call's first connection, when ``[agent] greeting`` is set;
    ``history`` (the conversation so far, when the call failed over to this agent from another
    provider) only when there is one."""
    start: dict[str, Any] = {
        "type": "start", "version": PROTOCOL_VERSION,
        "call": {"call_sid": call.call_sid, "stream_sid": call.stream_sid, "from": call.from_number,
                 "to": call.to_number, "params": dict(call.params), "agent": call.agent,
                 "variables": dict(call.variables)},
        "audio": {"encoding": ENCODING, "sample_rate": SAMPLE_RATE},
    }
    if call.tools:
        start["tools"] = [{"name": t.name, "description": t.description, "parameters": dict(t.parameters)}
                          for t in call.tools]
    if call.greeting:  # say it first, without waiting for the caller
        start["greeting"] = call.greeting
    turns = [{"role": t.role, "text": t.text} for t in history if t.text]
    if turns:
        start["history"] = turns
    return _dump(start)


def build_prompt(text: str) -> str:
    """Ask the agent to speak now (v1.1: idle check-ins, the idle goodbye)."""
    return _dump({"type": "prompt", "text": text})


def build_tool_result(call_id: str, name: str, output: Mapping[str, Any]) -> str:
    return _dump({"type": "tool_result", "call_id": call_id, "name": name, "output": dict(output)})


def build_dtmf(digit: str) -> str:
    return _dump({"type": "dtmf", "digit": digit})


def build_interrupt(item_id: str | None, heard_ms: int) -> str:
    return _dump({"type": "interrupt", "item_id": item_id, "heard_ms": max(0, heard_ms)})


def build_mark(item_id: str, played_ms: int) -> str:
    return _dump({"type": "mark", "item_id": item_id, "played_ms": played_ms})


def build_stop() -> str:
    return _dump({"type": "stop"})


# -- agent → bridge ---------------------------------------------------------------


def parse_message(raw: str | bytes) -> dict[str, Any]:
    """One agent message → its JSON object with a string ``type``."""
    if isinstance(raw, bytes):
        raise AgentProtocolError("agent: binary message (v1 reply audio is a JSON 'audio' message)")
    try:
        message = json.loads(raw)
    except ValueError:
        raise AgentProtocolError("agent: malformed JSON") from None
    if not isinstance(message, dict):
        raise AgentProtocolError("agent: message is not a JSON object")
    if not isinstance(message.get("type"), str):
        raise AgentProtocolError("agent: message without a string 'type'")
    return message


def build_transfer_failed(reason: str) -> str:
    """The agent's ``transfer`` did not happen (the call goes on with the agent)."""
    return _dump({"type": "transfer_failed", "reason": reason})


def _str(message: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = message.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or (not optional and not value):
        raise AgentProtocolError(f"agent: {message['type']}: '{key}' must be a non-empty string")
    return value


def _item_id(message: dict[str, Any]) -> str:
    item_id = _str(message, "item_id")
    assert item_id is not None
    if len(item_id) > MAX_ITEM_ID_CHARS:
        raise AgentProtocolError(f"agent: {message['type']}: 'item_id' longer than {MAX_ITEM_ID_CHARS} characters")
    return item_id


class AgentConnection:
    """The bridge's protocol state for one agent WebSocket."""

    def __init__(self) -> None:
        self.interrupted: deque[str] = deque(maxlen=MAX_INTERRUPTED_ITEMS)

    def interrupt(self, item_id: str | None, heard_ms: int) -> str:
        if item_id is not None and item_id not in self.interrupted:
            self.interrupted.append(item_id)
        return build_interrupt(item_id, heard_ms)

    def receive(self, raw: str | bytes) -> list[AgentEvent]:
        """Parse one agent message.

        Raises:
            AgentProtocolError: not a v1 message (binary, bad JSON, wrong types).
            AgentFailed: the agent sent ``error`` with ``"fatal": true``.
        """
        m = parse_message(raw)
        kind = m["type"]
        if kind == "audio":
            item_id = _item_id(m)
            audio = m.get("audio")
            if not isinstance(audio, str):
                raise AgentProtocolError("agent: audio: 'audio' must be a base64 string")
            try:
                ulaw = base64.b64decode(audio, validate=True)
            except (binascii.Error, ValueError):
                raise AgentProtocolError("agent: audio: 'audio' is not base64") from None
            if item_id in self.interrupted or not ulaw:
                return []
            return [AudioOut(item_id, ulaw)]
        if kind == "reply_done":
            item_id = _item_id(m)
            return [] if item_id in self.interrupted else [ReplyDone(item_id)]
        if kind == "clear":
            return [SpeechStarted(None)]
        if kind == "hangup":
            return [HangupRequest(_str(m, "reason", optional=True) or "agent")]
        if kind == "transfer":
            return [TransferRequest(_str(m, "to", optional=True) or None, summary_of(m))]
        if kind == "transcript":
            role = _str(m, "role")
            if role not in ROLES:
                raise AgentProtocolError("agent: transcript: 'role' must be 'user' or 'assistant'")
            text = _str(m, "text", optional=True) or ""
            return [Transcript(role, clip(text, MAX_TRANSCRIPT_CHARS))]
        if kind == "tool_call":
            call_id, name = _str(m, "call_id"), _str(m, "name")
            assert call_id is not None and name is not None
            args = m.get("arguments", {})
            if not isinstance(args, (dict, str)):
                raise AgentProtocolError("agent: tool_call: 'arguments' must be an object (or JSON text)")
            return [ToolCall(call_id, name, args if isinstance(args, str) else _dump(args))]
        if kind == "error":
            message = clip(_str(m, "message", optional=True) or "agent error", MAX_NOTICE_CHARS)
            code = clip(_str(m, "code", optional=True) or "", 64)
            if m.get("fatal") is True:
                raise AgentFailed(f"agent refused the call: {message}")
            return [AgentNotice(message, code)]
        return []  # unknown types: ignored (forward compatibility within v1)
