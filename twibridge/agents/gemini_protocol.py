"""Gemini Live API (BidiGenerateContent) messages, sans-IO, with the transcoding.

Order: ``setup`` first (model ``models/<model>``, ``responseModalities:
["AUDIO"]``, the voice, the system instruction, tools as
``functionDeclarations``, input and output transcription, session
resumption, sliding-window compression for calls longer than 15 min), then
wait for ``setupComplete``.

Audio is transcoded (Gemini has no μ-law): caller μ-law 8 kHz → PCM16 →
16 kHz (the half-band filter of :mod:`twibridge.audio.resample`) →
``realtimeInput.audio`` with ``audio/pcm;rate=16000``; model audio PCM16
24 kHz → the 73-tap anti-aliasing low-pass and every third sample →
μ-law 8 kHz.  Both filters are stateful per connection (and the output one
is reset at each new reply), so frame boundaries leave no clicks.  The rate
is read from each chunk's MIME type (24 kHz is what Gemini sends; 16 and 8 kHz
are accepted too).

Replies carry no ids: they are counted (``gm<n>``).  ``generationComplete``
ends one (:class:`ReplyDone`); ``turnComplete`` closes the turn (and flushes
the turn's transcripts, which arrive as fragments);
``serverContent.interrupted`` is the barge-in: the rest of that reply is
dropped until ``turnComplete``.

Tools: ``toolCall.functionCalls[{id, name, args}]``; the built-ins answer at
once (queued: :meth:`GeminiConnection.data_to_send`), the call's own become
:class:`ToolCall`\\ s whose results go back as ``toolResponse`` with the
same ``id`` — unless ``toolCallCancellation`` named that id first.

Resumption: ``sessionResumptionUpdate.newHandle`` (when ``resumable``) is
kept; ``goAway`` means the server will drop this connection soon, so at the
next turn boundary ``resume_now`` is set and the I/O layer ends it with
:class:`GoAway` (a planned reconnect that resumes with the handle).  Gemini has no error event: failures are close
codes, which the I/O layer maps.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Iterable, Mapping

from twibridge.agents.base import (
    REASON_PARAMETERS, TRANSFER_PARAMETERS, summary_of,
    AgentDisconnected, AgentEvent, AgentProtocolError, AudioOut, HangupRequest, ReplyDone, SpeechStarted,
    ToolCall, ToolSpec, Transcript, TransferRequest,
)
from twibridge.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from twibridge.audio.resample import Downsampler16kTo8k, Downsampler24kTo8k, Upsampler8kTo16k

END_CALL = "end_call"
TRANSFER = "transfer_to_human"
INPUT_MIME = "audio/pcm;rate=16000"
BUILTIN_DECLARATIONS: tuple[dict[str, Any], ...] = (
    {"name": END_CALL, "description": "Hang up the phone call. Say goodbye first; call this when the "
     "conversation is over.", "parameters": REASON_PARAMETERS},
    {"name": TRANSFER, "description": "Transfer the caller to a human agent when they ask for one or you "
     "cannot help.", "parameters": TRANSFER_PARAMETERS},
)


class GoAway(AgentDisconnected):
    """The server announced the end of this connection: reconnect at once and resume (not a failure)."""

    planned = True


def _dump(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def build_setup(model: str, voice: str, instructions: str, tools: Iterable[ToolSpec] = (),
                handle: str | None = None) -> str:
    declarations = [*BUILTIN_DECLARATIONS, *({"name": t.name, "description": t.description,
                                              "parameters": dict(t.parameters)} for t in tools)]
    setup: dict[str, Any] = {
        "model": model if model.startswith("models/") else f"models/{model}",
        "generationConfig": {"responseModalities": ["AUDIO"], "speechConfig": {
            "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": voice}}}},
        "systemInstruction": {"parts": [{"text": instructions}]},
        "tools": [{"functionDeclarations": declarations}],
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
        "sessionResumption": {"handle": handle} if handle else {},
        "contextWindowCompression": {"slidingWindow": {}},
    }
    return _dump({"setup": setup})


def build_history(history: Iterable[Transcript]) -> str | None:
    """The conversation so far as client turns (a fresh session without a resumption handle)."""
    turns = [{"role": "user" if t.role == "user" else "model", "parts": [{"text": t.text}]}
             for t in history if t.text]
    return _dump({"clientContent": {"turns": turns, "turnComplete": False}}) if turns else None


def build_tool_response(call_id: str, name: str, output: Mapping[str, Any]) -> str:
    response = {"error": output["error"]} if "error" in output else {"output": dict(output)}
    return _dump({"toolResponse": {"functionResponses": [{"id": call_id, "name": name, "response": response}]}})


def _obj(msg: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise AgentProtocolError(f"gemini: '{key}' must be an object")
    return value


def _rate(mime: Any) -> int:
    if not isinstance(mime, str) or not mime.startswith("audio/pcm"):
        raise AgentProtocolError(f"gemini: unexpected audio MIME type {mime!r}")
    for part in mime.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key == "rate" and value.isdigit():
            return int(value)
    return 24000


class GeminiConnection:
    """One Live API connection's protocol and transcoding state (see the module docstring)."""

    def __init__(self) -> None:
        self.ready = False
        self.session_id = ""
        self.handle: str | None = None  # the latest resumable handle
        self.going_away = False
        #: Set at the first turn boundary after ``goAway``: the I/O layer then ends
        #: the connection with :class:`GoAway` (after delivering this message's events).
        self.resume_now = False
        self.reply = 1
        self._speaking = False
        self._muted = False
        self._user_text: list[str] = []
        self._model_text: list[str] = []
        self._open_calls: dict[str, str] = {}
        self.cancelled: set[str] = set()
        self._outbox: list[str] = []
        self._up = Upsampler8kTo16k()
        self._down: Downsampler24kTo8k | Downsampler16kTo8k | None = None
        self._down_rate = 0

    @property
    def item_id(self) -> str:
        return f"gm{self.reply}"

    def data_to_send(self) -> list[str]:
        out, self._outbox = self._outbox, []
        return out

    def audio_message(self, ulaw: bytes) -> str:
        """Caller μ-law 8 kHz → one ``realtimeInput`` message of PCM16 16 kHz."""
        pcm = self._up.process(ulaw_to_pcm16(ulaw))
        return ('{"realtimeInput":{"audio":{"data":"' + base64.b64encode(pcm).decode("ascii")
                + '","mimeType":"' + INPUT_MIME + '"}}}')

    def interrupt(self) -> None:
        """The bridge cut the reply off: drop the rest of it (the server stops on its own VAD)."""
        self._muted, self._speaking = True, False

    def tool_result(self, call_id: str, name: str, output: Mapping[str, Any]) -> str | None:
        if self._open_calls.pop(call_id, None) is None:
            return None  # cancelled (toolCallCancellation) or unknown
        return build_tool_response(call_id, name, output)

    def _new_reply(self) -> None:
        self.reply += 1
        self._speaking = self._muted = False
        self._down = None

    def receive(self, raw: str | bytes) -> list[AgentEvent]:
        """One server message (JSON, as text or binary frame) → bridge events.

        Raises:
            AgentProtocolError: not JSON, wrong types, undecodable audio.
        """
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise AgentProtocolError("gemini: malformed JSON") from None
        if not isinstance(msg, dict):
            raise AgentProtocolError("gemini: message is not a JSON object")
        events: list[AgentEvent] = []
        if "setupComplete" in msg:
            done = msg["setupComplete"]
            self.session_id = str(done.get("sessionId") or "") if isinstance(done, dict) else ""
            self.ready = True
        if "serverContent" in msg:
            events += self._content(_obj(msg, "serverContent"))
        if "toolCall" in msg:
            events += self._tool_calls(_obj(msg, "toolCall"))
        if "toolCallCancellation" in msg:
            ids = _obj(msg, "toolCallCancellation").get("ids")
            for call_id in ids if isinstance(ids, list) else []:
                if isinstance(call_id, str) and self._open_calls.pop(call_id, None) is not None:
                    self.cancelled.add(call_id)
        if "sessionResumptionUpdate" in msg:
            update = _obj(msg, "sessionResumptionUpdate")
            if update.get("resumable") and isinstance(update.get("newHandle"), str) and update["newHandle"]:
                self.handle = update["newHandle"]
        if "goAway" in msg:
            self.going_away = True
            if not self._speaking and not self._open_calls and not self._model_text:
                self.resume_now = True  # between turns: nothing to finish first
        return events

    def _content(self, content: dict[str, Any]) -> list[AgentEvent]:
        events: list[AgentEvent] = []
        if content.get("interrupted") is True:
            self._muted, self._speaking = True, False
            events.append(SpeechStarted())
        for key, texts in (("inputTranscription", self._user_text), ("outputTranscription", self._model_text)):
            part = content.get(key)
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        turn = content.get("modelTurn")
        if turn is not None:
            parts = _obj(content, "modelTurn").get("parts")
            if not isinstance(parts, list):
                raise AgentProtocolError("gemini: modelTurn.parts must be a list")
            for part in parts:
                if isinstance(part, dict) and "inlineData" in part:
                    events += self._audio(_obj(part, "inlineData"))
        if content.get("generationComplete") is True and self._speaking:
            self._speaking = False
            events.append(ReplyDone(self.item_id))
        if content.get("turnComplete") is True:
            events += self._turn_complete()
        return events

    def _audio(self, data: dict[str, Any]) -> list[AgentEvent]:
        rate = _rate(data.get("mimeType"))
        raw = data.get("data")
        if not isinstance(raw, str):
            raise AgentProtocolError("gemini: inlineData.data must be a string")
        try:
            pcm = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise AgentProtocolError("gemini: inlineData.data is not base64") from None
        if len(pcm) % 2:
            raise AgentProtocolError("gemini: PCM16 audio with an odd number of bytes")
        if self._muted or not pcm:
            return []
        if rate != 8000:
            if self._down is None or self._down_rate != rate:
                if rate not in (16000, 24000):
                    raise AgentProtocolError(f"gemini: unsupported output rate {rate}")
                self._down, self._down_rate = (Downsampler24kTo8k() if rate == 24000 else Downsampler16kTo8k()), rate
            pcm = self._down.process(pcm)
        if not pcm:
            return []
        self._speaking = True
        return [AudioOut(self.item_id, pcm16_to_ulaw(pcm))]

    def _turn_complete(self) -> list[AgentEvent]:
        events: list[AgentEvent] = [ReplyDone(self.item_id)] if self._speaking else []
        for role, texts in (("user", self._user_text), ("assistant", self._model_text)):
            text = "".join(texts).strip()
            texts.clear()
            if text:
                events.append(Transcript(role, text))
        self._new_reply()
        if self.going_away and not self._open_calls:
            self.resume_now = True  # a turn boundary: the handle is resumable here
        return events

    def _tool_calls(self, call: dict[str, Any]) -> list[AgentEvent]:
        calls = call.get("functionCalls")
        if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
            raise AgentProtocolError("gemini: toolCall.functionCalls must be a list of objects")
        events: list[AgentEvent] = []
        for c in calls:
            call_id, name, args = c.get("id"), c.get("name"), c.get("args")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise AgentProtocolError("gemini: functionCalls need a string 'id' and 'name'")
            args = args if isinstance(args, dict) else {}
            if name in (END_CALL, TRANSFER):
                status = "hanging up" if name == END_CALL else "transferring"
                self._outbox.append(build_tool_response(call_id, name, {"ok": True, "status": status}))
                reason = args.get("reason") if isinstance(args.get("reason"), str) else ""
                events.append(HangupRequest(f"{END_CALL}: {reason}" if reason else END_CALL)
                              if name == END_CALL else TransferRequest(None, summary_of(args)))
                continue
            self._open_calls[call_id] = name
            events.append(ToolCall(call_id, name, _dump(args)))
        return events
