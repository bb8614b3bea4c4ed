"""ElevenLabs Agents (Conversational AI) WebSocket messages, sans-IO.

Order: our first message is ``conversation_initiation_client_data`` (the
call's variables as ``dynamic_variables``, which the agent's prompts can use
as ``{{name}}``); the server answers ``conversation_initiation_metadata``
with the agent's audio formats.  Those live on the agent (they cannot be
overridden per session), so a call starts only when both are ``ulaw_8000``
— Twilio's bytes then pass through — and otherwise fails with an error that
tells the operator what to set (:class:`AgentFailed`: no retry can fix it).

Audio: caller audio goes out as ``{"user_audio_chunk": <base64>}`` (no
``type`` key); agent audio arrives as ``audio`` events whose ``event_id``
grows.  Replies carry no id of their own, so they are counted: a reply ends
at ``agent_response_complete``, at the caller's ``user_transcript`` and at an
``interruption`` (``agent_response``, whose place among a reply's audio is
not fixed, only gives the transcript).  An
``interruption`` is the barge-in: audio whose ``event_id`` is ≤ its id is
dropped, as the ElevenLabs SDK does.

Every ``ping`` is answered with a ``pong`` carrying its ``event_id``
(queued for the I/O layer: :meth:`ElevenLabsConnection.data_to_send`).

Tools are configured on the agent (ElevenLabs has no per-session tool
declaration): a ``client_tool_call`` becomes a :class:`ToolCall`, answered
with ``client_tool_result``; client tools named ``end_call`` /
``transfer_to_human`` map to the bridge's hang-up / transfer.  ElevenLabs'
own system ``end_call`` closes the socket with 1000 (the I/O layer's job).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Iterable, Mapping

from twibridge.agents.base import (
    summary_of,
    AgentEvent, AgentFailed, AgentProtocolError, AudioOut, CallInfo, HangupRequest, ReplyDone, SpeechStarted,
    ToolCall, Transcript, TransferRequest,
)

ULAW = "ulaw_8000"
END_CALL = "end_call"
TRANSFER = "transfer_to_human"


def _dump(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def dynamic_variables(call: CallInfo) -> dict[str, str]:
    """What the agent may know about the call: its ``<Parameter>``\\ s plus the Twilio basics."""
    return {**dict(call.params), "twilio_call_sid": call.call_sid, "caller_number": call.from_number,
            "called_number": call.to_number}


def build_initiation(call: CallInfo) -> str:
    return _dump({"type": "conversation_initiation_client_data", "dynamic_variables": dynamic_variables(call)})


def build_contextual_update(history: Iterable[Transcript]) -> str | None:
    """The conversation so far, as non-interrupting context for a fresh conversation (or None)."""
    lines = [f"{'Caller' if t.role == 'user' else 'Agent'}: {t.text}" for t in history if t.text]
    if not lines:
        return None
    text = "This phone call continues an earlier conversation (it was reconnected). So far:\n" + "\n".join(lines)
    return _dump({"type": "contextual_update", "text": text})


def build_audio_chunk(ulaw: bytes) -> str:
    # An f-string: this runs up to 50 times a second per call.
    return '{"user_audio_chunk":"' + base64.b64encode(ulaw).decode("ascii") + '"}'


def build_tool_result(call_id: str, output: Mapping[str, Any]) -> str:
    return _dump({"type": "client_tool_result", "tool_call_id": call_id, "result": _dump(output),
                  "is_error": "error" in output})


def _obj(msg: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise AgentProtocolError(f"elevenlabs: {msg.get('type')}: '{key}' must be an object")
    return value


def _str(msg: Mapping[str, Any], key: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str):
        raise AgentProtocolError(f"elevenlabs: '{key}' must be a string")
    return value


def _int(msg: Mapping[str, Any], key: str) -> int:
    value = msg.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AgentProtocolError(f"elevenlabs: '{key}' must be an integer")
    return value


class ElevenLabsConnection:
    """One conversation's protocol state (see the module docstring)."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.ready = False
        self.conversation_id = ""
        self.reply = 1  # AudioOut ids are "el<reply>"
        self._speaking = False
        self._muted = False
        self.last_interrupt_id = -1
        self._open_calls: set[str] = set()
        self._outbox: list[str] = []

    @property
    def item_id(self) -> str:
        return f"el{self.reply}"

    def data_to_send(self) -> list[str]:
        out, self._outbox = self._outbox, []
        return out

    def interrupt(self) -> None:
        """The bridge cut the reply off (its own VAD): ElevenLabs may not know, so the
        rest of that reply is dropped until the next reply boundary."""
        self._speaking = False
        self._muted = True

    def tool_result(self, call_id: str, output: Mapping[str, Any]) -> str | None:
        if call_id not in self._open_calls:
            return None
        self._open_calls.discard(call_id)
        return build_tool_result(call_id, output)

    def _next_reply(self) -> list[AgentEvent]:
        done: list[AgentEvent] = [ReplyDone(self.item_id)] if self._speaking else []
        self._speaking = self._muted = False
        self.reply += 1
        return done

    def receive(self, raw: str | bytes) -> list[AgentEvent]:
        """One server message → bridge events.

        Raises:
            AgentProtocolError: not JSON, or a known event with wrong types.
            AgentFailed: the agent's audio formats are not μ-law 8 kHz.
        """
        if isinstance(raw, bytes):
            raise AgentProtocolError("elevenlabs: unexpected binary message")
        try:
            msg = json.loads(raw)
        except ValueError:
            raise AgentProtocolError("elevenlabs: malformed JSON") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise AgentProtocolError("elevenlabs: message is not a JSON object with a string 'type'")
        kind = msg["type"]
        if kind == "audio":
            return self._audio(_obj(msg, "audio_event"))
        if kind == "ping":
            event_id = _int(_obj(msg, "ping_event"), "event_id")
            self._outbox.append(_dump({"type": "pong", "event_id": event_id}))
            return []
        if kind == "interruption":
            event = msg.get("interruption_event")
            if isinstance(event, dict) and isinstance(event.get("event_id"), int):
                self.last_interrupt_id = max(self.last_interrupt_id, event["event_id"])
            self._speaking = False  # no ReplyDone: the reply was cut, not finished
            self._next_reply()
            return [SpeechStarted()]
        if kind == "agent_response":
            # Its position relative to the reply's audio is not fixed: never a reply boundary.
            return [Transcript("assistant", _str(_obj(msg, "agent_response_event"), "agent_response"))]
        if kind == "agent_response_complete":
            return self._next_reply()
        if kind == "user_transcript":
            text = _str(_obj(msg, "user_transcription_event"), "user_transcript")
            return [*self._next_reply(), Transcript("user", text)]  # the caller's turn: a reply is over
        if kind == "client_tool_call":
            return self._tool_call(_obj(msg, "client_tool_call"))
        if kind == "conversation_initiation_metadata":
            return self._metadata(_obj(msg, "conversation_initiation_metadata_event"))
        # tentative_user_transcript, agent_response_correction, vad_score, agent_chat_response_part,
        # agent_response_metadata, internal_*, mcp_*, agent_tool_*: informational.
        return []

    def _metadata(self, event: dict[str, Any]) -> list[AgentEvent]:
        user_in, agent_out = event.get("user_input_audio_format"), event.get("agent_output_audio_format")
        if user_in != ULAW or agent_out != ULAW:
            raise AgentFailed(
                f"elevenlabs agent {self.agent_id} uses user_input_audio_format={user_in!s}, "
                f"agent_output_audio_format={agent_out!s}; a phone line needs both set to {ULAW}: in the agent's "
                "settings set the TTS output format and the user input audio format to μ-law 8000 Hz")
        self.conversation_id = str(event.get("conversation_id") or "")
        self.ready = True
        return []

    def _audio(self, event: dict[str, Any]) -> list[AgentEvent]:
        event_id = _int(event, "event_id")
        data = _str(event, "audio_base_64")
        if event_id <= self.last_interrupt_id or self._muted:
            return []
        try:
            ulaw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise AgentProtocolError("elevenlabs: audio: 'audio_base_64' is not base64") from None
        if not ulaw:
            return []
        self._speaking = True
        return [AudioOut(self.item_id, ulaw)]

    def _tool_call(self, call: dict[str, Any]) -> list[AgentEvent]:
        name, call_id = _str(call, "tool_name"), _str(call, "tool_call_id")
        params = call.get("parameters")
        params = params if isinstance(params, dict) else {}
        if name in (END_CALL, TRANSFER):
            status = "hanging up" if name == END_CALL else "transferring"
            self._outbox.append(build_tool_result(call_id, {"ok": True, "status": status}))
            reason = params.get("reason") if isinstance(params.get("reason"), str) else ""
            return [HangupRequest(f"{END_CALL}: {reason}" if reason else END_CALL)
                    if name == END_CALL else TransferRequest(None, summary_of(params))]
        self._open_calls.add(call_id)
        return [ToolCall(call_id, name, _dump(params))]
