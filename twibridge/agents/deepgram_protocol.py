"""Deepgram Voice Agent API v1 messages, sans-IO: frames in, events out; calls in, frames out.

The order is the server's rule: wait for ``Welcome``, send exactly one
``Settings`` (μ-law 8 kHz both ways, ``container: "none"``: Twilio's bytes
pass through untranscoded), wait for ``SettingsApplied``, only then stream
audio (binary frames both ways).  Anything before ``Settings`` is fatal on
Deepgram's side, so :meth:`DeepgramConnection.receive` queues the
``Settings`` answer to ``Welcome`` for the I/O layer (:meth:`data_to_send`).

Agent audio carries no ids, so replies are counted: a new one starts at
``AgentStartedSpeaking``; ``AgentAudioDone`` ends it.  ``UserStartedSpeaking``
is the barge-in signal; after it (or after the bridge cut the reply off)
late binary audio is dropped until the next ``AgentStartedSpeaking``, so the
caller never hears the tail of a reply they interrupted.

Tools: the call's functions (``CallInfo.tools``) plus the built-ins
``end_call`` / ``transfer_to_human`` (declared ``defer_until_eot``: they wait
for the caller's turn to be confirmed, so a speculative reply cannot hang up)
go into ``agent.think.functions`` without an ``endpoint`` (= client-side).
Only ``client_side: true`` requests are acted on; a ``FunctionCallCancelled``
id is never answered (:meth:`tool_result` returns nothing for it).

Errors: ``Error`` before ``SettingsApplied`` is about our settings →
:class:`AgentFailed`; after it the session is over (Deepgram calls every
``Error`` fatal) → :class:`AgentDisconnected`, and the supervisor opens a
fresh session seeded with the conversation (``agent.context.messages``).
``Warning`` is an :class:`AgentNotice`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from twibridge.agents.base import (
    REASON_PARAMETERS, TRANSFER_PARAMETERS, summary_of,
    AgentDisconnected, AgentEvent, AgentFailed, AgentNotice, AgentProtocolError, AudioOut, HangupRequest,
    ReplyDone, SpeechStarted, ToolCall, ToolSpec, Transcript, TransferRequest,
)

END_CALL = "end_call"
TRANSFER = "transfer_to_human"
BUILTIN_FUNCTIONS: tuple[dict[str, Any], ...] = (
    {"name": END_CALL, "description": "Hang up the phone call. Say goodbye first; call this when the "
     "conversation is over.", "parameters": REASON_PARAMETERS, "defer_until_eot": True},
    {"name": TRANSFER, "description": "Transfer the caller to a human agent when they ask for one or you "
     "cannot help.", "parameters": TRANSFER_PARAMETERS, "defer_until_eot": True},
)
KEEPALIVE = '{"type":"KeepAlive"}'
#: Deepgram wants a KeepAlive at least this often while no audio flows.
KEEPALIVE_INTERVAL_S = 8.0


@dataclass(frozen=True, slots=True)
class DeepgramSettings:
    """What goes into ``Settings`` (from ``[agent.deepgram]``; no secrets)."""

    agent: str = ""  # a stored agent configuration id: wins over the inline keys
    listen_model: str = "nova-3"
    think_provider: str = "open_ai"
    think_model: str = "gpt-4o-mini"
    speak_model: str = "aura-2-thalia-en"
    prompt: str = ""
    greeting: str = ""


def _dump(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def build_settings(s: DeepgramSettings, tools: Iterable[ToolSpec] = (),
                   history: Iterable[Transcript] = ()) -> str:
    """The one ``Settings`` message.

    With a stored agent id, ``agent`` is that string: its functions and
    context are the stored configuration's (nothing of ours can be added).
    """
    audio = {"input": {"encoding": "mulaw", "sample_rate": 8000},
             "output": {"encoding": "mulaw", "sample_rate": 8000, "container": "none"}}
    if s.agent:
        return _dump({"type": "Settings", "audio": audio, "agent": s.agent})
    functions = [*BUILTIN_FUNCTIONS, *({"name": t.name, "description": t.description,
                                        "parameters": dict(t.parameters)} for t in tools)]
    agent: dict[str, Any] = {
        "listen": {"provider": {"type": "deepgram", "model": s.listen_model}},
        "think": {"provider": {"type": s.think_provider, "model": s.think_model}, "prompt": s.prompt,
                  "functions": functions},
        "speak": {"provider": {"type": "deepgram", "model": s.speak_model}},
    }
    messages = [{"type": "History", "role": "user" if t.role == "user" else "assistant", "content": t.text}
                for t in history if t.text]
    if messages:
        agent["context"] = {"messages": messages}
    if s.greeting and not messages:  # a fresh session mid-call must not greet the caller again
        agent["greeting"] = s.greeting
    return _dump({"type": "Settings", "audio": audio, "agent": agent})


def build_function_call_response(call_id: str, name: str, output: Mapping[str, Any]) -> str:
    return _dump({"type": "FunctionCallResponse", "id": call_id, "name": name, "content": _dump(output)})


def _parse(raw: str) -> dict[str, Any]:
    try:
        msg = json.loads(raw)
    except ValueError:
        raise AgentProtocolError("deepgram: malformed JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise AgentProtocolError("deepgram: message is not a JSON object with a string 'type'")
    return msg


def _str(msg: Mapping[str, Any], key: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str):
        raise AgentProtocolError(f"deepgram: {msg.get('type')}: '{key}' must be a string")
    return value


def _functions(msg: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = msg.get("functions")
    if not isinstance(items, list) or not all(isinstance(f, dict) for f in items):
        raise AgentProtocolError(f"deepgram: {msg.get('type')}: 'functions' must be a list of objects")
    return items


class DeepgramConnection:
    """One Voice Agent WebSocket's protocol state (see the module docstring)."""

    def __init__(self, settings: DeepgramSettings, tools: tuple[ToolSpec, ...] = (),
                 history: Iterable[Transcript] = ()) -> None:
        self.settings, self.tools, self.history = settings, tools, list(history)
        self.welcomed = False
        self.ready = False
        self.reply = 0  # replies counted: AudioOut ids are "dg<reply>"
        self._speaking = False  # audio of the current reply seen, ReplyDone not yet given
        self._muted = False  # drop audio until the next AgentStartedSpeaking
        self._open_calls: dict[str, str] = {}  # client-side call id → name, not yet answered
        self.cancelled: set[str] = set()
        self._outbox: list[str] = []

    @property
    def item_id(self) -> str:
        return f"dg{self.reply}"

    def data_to_send(self) -> list[str]:
        out, self._outbox = self._outbox, []
        return out

    def interrupt(self) -> None:
        """The bridge cut the reply off: Deepgram tracks what it sent, so only drop its late audio."""
        self._muted, self._speaking = True, False

    def tool_result(self, call_id: str, name: str, output: Mapping[str, Any]) -> str | None:
        """The ``FunctionCallResponse`` for ``call_id``; None when it was cancelled (or is unknown)."""
        if self._open_calls.pop(call_id, None) is None:
            return None
        return build_function_call_response(call_id, name, output)

    def receive(self, raw: str | bytes) -> list[AgentEvent]:
        """One server frame → bridge events.

        Raises:
            AgentProtocolError: garbage, or audio before ``SettingsApplied``.
            AgentFailed: an ``Error`` about our ``Settings``.
            AgentDisconnected: an ``Error`` mid-session (fatal: open a fresh one).
        """
        if isinstance(raw, bytes):
            if not self.ready:
                raise AgentProtocolError("deepgram: audio before SettingsApplied")
            if self._muted or not raw:
                return []
            self._speaking = True
            return [AudioOut(self.item_id, raw)]
        msg = _parse(raw)
        kind = msg["type"]
        if kind == "Welcome":
            if self.welcomed:
                raise AgentProtocolError("deepgram: a second Welcome")
            self.welcomed = True
            self._outbox.append(build_settings(self.settings, self.tools, self.history))
            return []
        if kind == "SettingsApplied":
            self.ready = True
            return []
        if kind == "AgentStartedSpeaking":
            self.reply += 1
            self._muted, self._speaking = False, False
            return []
        if kind == "AgentAudioDone":
            if not self._speaking:
                return []
            self._speaking = False
            return [ReplyDone(self.item_id)]
        if kind == "UserStartedSpeaking":
            self._muted, self._speaking = True, False
            return [SpeechStarted()]
        if kind == "ConversationText":
            role = _str(msg, "role")
            return [Transcript("user" if role == "user" else "assistant", _str(msg, "content"))]
        if kind == "FunctionCallRequest":
            return self._function_calls(_functions(msg))
        if kind == "FunctionCallCancelled":
            for item in _functions(msg):
                call_id = item.get("id")
                if isinstance(call_id, str) and self._open_calls.pop(call_id, None) is not None:
                    self.cancelled.add(call_id)
            return []
        if kind == "Warning":
            return [AgentNotice(str(msg.get("description") or ""), str(msg.get("code") or "warning"))]
        if kind == "Error":
            code, text = str(msg.get("code") or ""), str(msg.get("description") or "")
            if not self.ready:
                raise AgentFailed(f"deepgram refused the settings: {code}: {text}")
            raise AgentDisconnected(f"deepgram error {code}: {text}")
        # AgentThinking, LatencyReport, History, FunctionCallResponse (server-side, informational),
        # PromptUpdated, SpeakUpdated, InjectionRefused, …
        return []

    def _function_calls(self, items: list[dict[str, Any]]) -> list[AgentEvent]:
        events: list[AgentEvent] = []
        for item in items:
            if item.get("client_side") is not True:
                continue  # Deepgram runs it (it has an endpoint) and tells us the result
            call_id, name = _str(item, "id"), _str(item, "name")
            arguments = item.get("arguments")
            arguments = arguments if isinstance(arguments, str) else _dump(arguments or {})
            if name in (END_CALL, TRANSFER):
                status = "hanging up" if name == END_CALL else "transferring"
                self._outbox.append(build_function_call_response(call_id, name, {"ok": True, "status": status}))
                try:
                    args = json.loads(arguments)
                except ValueError:
                    args = {}
                if not isinstance(args, dict):
                    args = {}
                reason = args.get("reason") if isinstance(args.get("reason"), str) else ""
                events.append(HangupRequest(f"{END_CALL}: {reason}" if reason else END_CALL)
                              if name == END_CALL else TransferRequest(None, summary_of(args)))
                continue
            self._open_calls[call_id] = name
            events.append(ToolCall(call_id, name, arguments))
        return events
