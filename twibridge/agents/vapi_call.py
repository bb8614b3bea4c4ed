"""VAPI's ``POST /call`` for the ``vapi.websocket`` transport: the request and its answer (sans-IO).

:mod:`twibridge.agents.vapi_protocol` holds the socket's messages and re-exports
these names; :mod:`twibridge.agents.vapi` does the I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from twibridge.agents.base import AgentDisconnected, AgentFailed, AgentProtocolError, CallInfo

CALL_PATH = "/call"
#: μ-law 8 kHz raw both ways: Twilio's payloads pass through untouched.
TRANSPORT: dict[str, Any] = {
    "provider": "vapi.websocket",
    "audioFormat": {"format": "mulaw", "container": "raw", "sampleRate": 8000},
}
#: The socket messages we act on; set per call so an assistant configured
#: without them (VAPI's default list lacks some) still barges in and ends.
CLIENT_MESSAGES: tuple[str, ...] = (
    "speech-update", "user-interrupted", "transcript", "tool-calls", "transfer-update", "status-update", "hang",
)
#: Longest provider error text we repeat (it ends up in logs and call summaries).
MAX_ERROR_CHARS = 200


@dataclass(frozen=True, slots=True)
class VapiCall:
    """A created VAPI call.  Both fields are secrets (the id is in the URL)."""

    id: str = field(repr=False)
    websocket_url: str = field(repr=False)


# -- POST /call ----------------------------------------------------------------


def build_create_call(
    assistant_id: str,
    assistant: Mapping[str, Any] | None,
    call: CallInfo,
    *,
    reconnect: bool = False,
) -> dict[str, Any]:
    """The ``POST /call`` JSON body for one (re)connection.

    An inline ``assistant`` wins over ``assistant_id`` (config validation
    requires one).  ``assistantOverrides`` enables the socket messages we
    need, hands the call's identity to the assistant as template variables
    (``{{twilioCallSid}}``, ``{{callerNumber}}``, ``{{calledNumber}}``) and,
    on a mid-call reconnect, stops a fresh assistant from greeting again.
    ``phoneNumber``/``phoneNumberId`` are never sent: VAPI refuses them with
    this transport.
    """
    body: dict[str, Any] = {}
    if assistant:
        body["assistant"] = dict(assistant)
    elif assistant_id:
        body["assistantId"] = assistant_id
    else:
        raise ValueError("agent.vapi: assistant_id or an inline assistant is required")
    overrides: dict[str, Any] = {
        "clientMessages": list(CLIENT_MESSAGES),
        "variableValues": {  # the lookup's variables ({{customer_name}}), then the call's identity
            **call.variables, "twilioCallSid": call.call_sid, "callerNumber": call.from_number, "calledNumber": call.to_number,
        },
    }
    if reconnect:
        overrides["firstMessageMode"] = "assistant-waits-for-user"
    elif call.greeting:
        overrides["firstMessage"] = call.greeting
        overrides["firstMessageMode"] = "assistant-speaks-first"
    body["assistantOverrides"] = overrides
    body["transport"] = json.loads(json.dumps(TRANSPORT))  # a copy callers may not mutate ours through
    return body


def error_text(body: bytes) -> str:
    """VAPI's error message (``{"message": str | [str], "error": ...}``), shortened."""
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
    else:
        msg = data.get("message") if isinstance(data, dict) else None
        if isinstance(msg, list):
            text = "; ".join(str(m) for m in msg)
        elif msg:
            text = str(msg)
        elif isinstance(data, dict) and data.get("error"):
            text = str(data["error"])
        else:
            text = ""
    text = " ".join(text.split())
    return text[:MAX_ERROR_CHARS] + ("…" if len(text) > MAX_ERROR_CHARS else "")


def parse_create_call(status: int, body: bytes) -> VapiCall:
    """Interpret the ``POST /call`` reply.

    Raises:
        AgentFailed: VAPI refused (400/401/402/403/404/422…): a new attempt
            would be refused too — bad key, unknown assistant, bad config.
        AgentDisconnected: 408/429/5xx — a later attempt may work.
        AgentProtocolError: a 2xx without a usable ``transport.websocketCallUrl``.
    """
    if 200 <= status < 300:
        try:
            data = json.loads(body)
        except ValueError:
            raise AgentProtocolError("vapi /call: reply is not JSON") from None
        transport = data.get("transport") if isinstance(data, dict) else None
        url = transport.get("websocketCallUrl") if isinstance(transport, dict) else None
        call_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(url, str) or not url.startswith(("wss://", "ws://")):
            raise AgentProtocolError("vapi /call: reply has no ws(s):// transport.websocketCallUrl")
        if not isinstance(call_id, str) or not call_id:
            raise AgentProtocolError("vapi /call: reply has no call id")
        return VapiCall(id=call_id, websocket_url=url)
    detail = error_text(body)
    suffix = f": {detail}" if detail else ""
    if status in (401, 403):
        raise AgentFailed(f"vapi refused the API key (HTTP {status}); check agent.vapi.api_key "
                          f"(the private key){suffix}")
    if status in (408, 429) or status >= 500:
        raise AgentDisconnected(f"vapi /call failed (HTTP {status}){suffix}")
    if 400 <= status < 500:
        raise AgentFailed(f"vapi refused the call (HTTP {status}){suffix}")
    raise AgentDisconnected(f"vapi /call: unexpected HTTP {status}")


# -- messages we send --------------------------------------------------------------
