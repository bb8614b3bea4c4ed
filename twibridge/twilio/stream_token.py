"""Per-call stream tokens: tie each Media Streams socket to a signed ``/voice``.

Twilio signs the WebSocket upgrade over the ``wss://`` URL alone, so the
``X-Twilio-Signature`` of ``/media-stream`` is the same for every call: anyone
who once saw it (a proxy that logs headers, say) could open streams at will,
each one a live agent session.  ``/voice`` is different: Twilio signs its
form, CallSid included, and nobody without the auth token can forge that.

So ``/voice`` mints a token for the CallSid it answers and puts it in the
TwiML as ``<Parameter name="twibridge_token">``; Twilio hands it back in the
``start`` event's ``customParameters``.  The call checks it before anything
else (no agent is connected for a stream without a valid one).  The token is
an HMAC of the CallSid and the time it was issued, keyed by the auth token:
stateless, so it holds across ``--workers`` and across VMs that share the
auth token, and it expires (``[twilio] stream_token_ttl_s``) so a captured
one is of use only briefly, and only while no stream for that CallSid is live
(the registry refuses a second one).

Sans-IO: plain functions of strings and a clock reading.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["PARAMETER", "InvalidStreamToken", "check", "issue"]

#: The ``<Parameter>`` / ``customParameters`` name the token travels under.
PARAMETER = "twibridge_token"
_VERSION = "v1"
#: Tokens minted up to this far in the future are accepted (clocks of VMs differ a little).
CLOCK_SKEW_S = 5.0


class InvalidStreamToken(Exception):
    """The ``start`` event's token is missing, malformed, forged, for another call, or stale."""


def _mac(secret: str, call_sid: str, issued: int) -> str:
    digest = hmac.new(secret.encode(), f"twibridge-stream|{_VERSION}|{call_sid}|{issued}".encode(),
                      hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode("ascii")


def issue(secret: str, call_sid: str, now: float) -> str:
    """The token for ``call_sid``, issued at ``now`` (Unix seconds)."""
    issued = int(now)
    return f"{_VERSION}.{issued}.{_mac(secret, call_sid, issued)}"


def check(secret: str, token: str | None, call_sid: str, now: float, ttl_s: float) -> None:
    """Accept ``token`` for ``call_sid`` at ``now``, or raise :class:`InvalidStreamToken` saying why."""
    if not token:
        raise InvalidStreamToken(f"no {PARAMETER} parameter: streams must come from this server's /voice TwiML "
                                 "(or set [twilio] require_stream_token = false)")
    version, _, rest = token.partition(".")
    issued_text, _, mac = rest.partition(".")
    if version != _VERSION or not issued_text.isdigit() or len(issued_text) > 12 or not mac:
        raise InvalidStreamToken(f"malformed {PARAMETER}")
    issued = int(issued_text)
    if not hmac.compare_digest(mac.encode(), _mac(secret, call_sid, issued).encode()):
        raise InvalidStreamToken(f"{PARAMETER} does not match this CallSid")
    age = now - issued
    if age < -CLOCK_SKEW_S:
        raise InvalidStreamToken(f"{PARAMETER} issued in the future ({-age:.0f} s ahead)")
    if age > ttl_s:
        raise InvalidStreamToken(f"{PARAMETER} expired ({age:.0f} s old, stream_token_ttl_s = {ttl_s:g})")
