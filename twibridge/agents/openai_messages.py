"""Client events of the OpenAI Realtime GA protocol: what twibridge sends (sans-IO).

The builders, the constants they share with the parser, and our two built-in
functions; :mod:`twibridge.agents.openai_protocol` parses what the server sends
and keeps the connection's state (and re-exports these names).
"""

from __future__ import annotations

import base64
import json
from typing import Any, Iterable

from twibridge.agents.base import SUMMARY_PARAMETER, ToolSpec

AUDIO_FORMAT = {"type": "audio/pcmu"}
#: μ-law 8 kHz: 8 bytes per millisecond.
BYTES_PER_MS = 8
#: Items whose audio length we remember (older ones cannot be barged into).
MAX_TRACKED_ITEMS = 32
#: Error codes that mean "this key/account/model will not work": fall back at once.
FATAL_ERROR_CODES = frozenset({
    "invalid_api_key", "insufficient_quota", "model_not_found", "account_deactivated",
    "organization_deactivated", "unsupported_country_region_territory",
})
FATAL_ERROR_TYPES = frozenset({"authentication_error", "permission_error"})
#: Harmless answers to our own defensive messages (cancel after the response ended).
QUIET_ERROR_CODES = frozenset({"response_cancel_not_active"})

END_CALL = "end_call"
TRANSFER = "transfer_to_human"
#: The only functions the model may call.  ``transfer_to_human`` takes no
#: number on purpose: a caller must not be able to talk the model into
#: dialling an arbitrary (premium) number; the bridge uses ``[fallback] dial``.
TOOLS: tuple[dict[str, Any], ...] = (
    {
        "type": "function", "name": END_CALL,
        "description": "Hang up the phone call. Say goodbye first; call this when the conversation is over.",
        "parameters": {"type": "object", "properties": {
            "reason": {"type": "string", "description": "Why the call ends, in a few words."}}},
    },
    {
        "type": "function", "name": TRANSFER,
        "description": "Transfer the caller to a human agent when they ask for one or you cannot help.",
        "parameters": {"type": "object", "properties": {
            "reason": {"type": "string", "description": "Why the caller needs a human, in a few words."},
            "summary": SUMMARY_PARAMETER}},
    },
)


# -- builders (client events) -------------------------------------------------


def _dump(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def build_session_update(model: str, voice: str, instructions: str, transcribe_model: str | None = None,
                         tools: Iterable[ToolSpec] = ()) -> str:
    """The first message: GA session config, μ-law both ways, server VAD, our two tools
    plus the call's configured functions (``tools``).

    ``transcribe_model`` (e.g. ``gpt-4o-mini-transcribe``) turns on caller
    transcripts; off by default because it is billed separately.
    """
    audio_in: dict[str, Any] = {"format": AUDIO_FORMAT, "turn_detection": {"type": "server_vad"}}
    if transcribe_model:
        audio_in["transcription"] = {"model": transcribe_model}
    return _dump({"type": "session.update", "session": {
        "type": "realtime", "model": model, "output_modalities": ["audio"], "instructions": instructions,
        "audio": {"input": audio_in, "output": {"format": AUDIO_FORMAT, "voice": voice}},
        "tools": [*TOOLS, *({"type": "function", "name": t.name, "description": t.description,
                              "parameters": dict(t.parameters)} for t in tools)], "tool_choice": "auto",
    }})


def build_audio_append(ulaw: bytes) -> str:
    # An f-string: this runs 50 times a second per call (stack-notes: ~10x cheaper than dumps).
    return '{"type":"input_audio_buffer.append","audio":"' + base64.b64encode(ulaw).decode("ascii") + '"}'


def build_response_cancel() -> str:
    return _dump({"type": "response.cancel"})


def build_truncate(item_id: str, audio_end_ms: int) -> str:
    return _dump({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                  "audio_end_ms": audio_end_ms})


def build_function_call_output(call_id: str, output: dict[str, Any]) -> str:
    return _dump({"type": "conversation.item.create",
                  "item": {"type": "function_call_output", "call_id": call_id, "output": _dump(output)}})


def build_response_create(instructions: str | None = None) -> str:
    """Ask for a reply now; ``instructions`` steer this one reply only (the greeting)."""
    if instructions is None:
        return _dump({"type": "response.create"})
    return _dump({"type": "response.create", "response": {"instructions": instructions}})


def build_system_item(text: str) -> str:
    """A system message in the conversation (an idle check-in's instruction)."""
    return _dump({"type": "conversation.item.create", "item": {
        "type": "message", "role": "system", "content": [{"type": "input_text", "text": text}],
    }})


def greeting_instructions(greeting: str) -> str:
    return f"Greet the caller now by saying exactly this, and nothing else: {greeting}"


def build_history_item(role: str, text: str) -> str:
    """A past turn as text, to seed a fresh session after a reconnect (no resume exists)."""
    kind = "input_text" if role == "user" else "output_text"
    return _dump({"type": "conversation.item.create",
                  "item": {"type": "message", "role": "user" if role == "user" else "assistant",
                           "content": [{"type": kind, "text": text}]}})


def build_transfer_failed(reason: str) -> list[str]:
    """Tell the model its transfer did not happen, and let it say so to the caller."""
    return [_dump({"type": "conversation.item.create",
                   "item": {"type": "message", "role": "system", "content": [
                       {"type": "input_text", "text": f"The transfer to a human did not happen ({reason}). "
                                                      "Tell the caller and keep helping them."}]}}),
            build_response_create()]


# -- parsing helpers -----------------------------------------------------------
