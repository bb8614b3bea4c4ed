"""Per-call stream tokens: tie each Media Streams socket to a signed ``/voice``.

Twilio signs the WebSocket upgrade over the ``wss://`` URL alone, so the
``X-Twilio-Signature`` of ``/media-stream`` is the same for every call: anyone
who once saw it (a proxy that logs headers, say) could open streams at will,
each one a live agent session.  ``/voice`` is different: Twilio signs its
form, CallSid included, and nobody without the auth token can forge that.

So ``/voice`` mints a token for the call it answers and puts it in the TwiML
as ``<Parameter name="twibridge_token">``; Twilio hands it back in the
``start`` event's ``customParameters``.  The call checks it before anything
else (no agent is connected for a stream without a valid one).

What the token binds (an HMAC keyed by the auth token): the AccountSid, the
CallSid, From, To, the issue time **and a canonical digest of every other
``<Parameter>``** ``/voice`` put into the TwiML.  :func:`issue` takes the
parameter mapping itself, so a parameter another feature adds later (an
agent name, routing variables) is covered without touching this module, and
``start.customParameters`` must carry exactly those parameters, unchanged —
none added, none dropped.  The digest is SHA-256 over the sorted
``(name, value)`` pairs as JSON: unambiguous, whatever the values contain.

Verification stays stateless (it holds across ``--workers`` and across VMs
that share the auth token); the token expires (``[twilio] stream_token_ttl_s``);
and it is single-use: :func:`check` returns the token's id, which the call
records in the registry when its stream starts (cluster-wide with Redis), so a
finished call's token cannot open a second stream.

Sans-IO: plain functions of strings and a clock reading.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Mapping

__all__ = ["PARAMETER", "InvalidStreamToken", "check", "issue", "params_digest"]

#: The ``<Parameter>`` / ``customParameters`` name the token travels under.
PARAMETER = "twibridge_token"
_VERSION = "v2"
#: Tokens minted up to this far in the future are accepted (clocks of VMs differ a little).
CLOCK_SKEW_S = 5.0


class InvalidStreamToken(Exception):
    """The ``start`` event's token is missing, malformed, forged, for another call, or stale."""


def params_digest(params: Mapping[str, str]) -> str:
    """The canonical digest of the ``<Parameter>``\\ s (the token itself excluded)."""
    pairs = sorted((str(k), str(v)) for k, v in params.items() if k != PARAMETER)
    blob = json.dumps(pairs, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def _mac(secret: str, account_sid: str, call_sid: str, params: Mapping[str, str], issued: int) -> str:
    fields = [_VERSION, account_sid, call_sid, params.get("From", ""), params.get("To", ""), str(issued),
              params_digest(params)]
    # JSON keeps the fields apart whatever they contain (no separator to smuggle).
    msg = "twibridge-stream|" + json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    digest = hmac.new(secret.encode(), msg.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode("ascii")


def issue(secret: str, *, account_sid: str, call_sid: str, params: Mapping[str, str], now: float) -> str:
    """The token for this call's ``params`` (every ``<Parameter>`` of the TwiML, From/To included),
    issued at ``now`` (Unix seconds)."""
    issued = int(now)
    return f"{_VERSION}.{issued}.{_mac(secret, account_sid, call_sid, params, issued)}"


def check(secret: str, token: str | None, *, account_sid: str, call_sid: str, params: Mapping[str, str],
          now: float, ttl_s: float) -> str:
    """Accept ``token`` for this ``start`` (its AccountSid, CallSid and ``customParameters``,
    the token's own entry ignored) at ``now``; return the token's id (for single use).

    Raises:
        InvalidStreamToken: saying why (missing, malformed, not for this call, stale).
    """
    if not token:
        raise InvalidStreamToken(f"no {PARAMETER} parameter: streams must come from this server's /voice TwiML "
                                 "(or set [twilio] require_stream_token = false)")
    version, _, rest = token.partition(".")
    issued_text, _, mac = rest.partition(".")
    if version != _VERSION or not issued_text.isdigit() or len(issued_text) > 12 or not mac or len(mac) > 64:
        raise InvalidStreamToken(f"malformed {PARAMETER}")
    issued = int(issued_text)
    expected = _mac(secret, account_sid, call_sid, params, issued)
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        raise InvalidStreamToken(f"{PARAMETER} does not match this call (AccountSid, CallSid, From, To "
                                 "or another parameter differs from what /voice answered)")
    age = now - issued
    if age < -CLOCK_SKEW_S:
        raise InvalidStreamToken(f"{PARAMETER} issued in the future ({-age:.0f} s ahead)")
    if age > ttl_s:
        raise InvalidStreamToken(f"{PARAMETER} expired ({age:.0f} s old, stream_token_ttl_s = {ttl_s:g})")
    # The id is a hash of the MAC, not the MAC: the registry (Redis) never holds a usable token.
    return hashlib.sha256(expected.encode()).hexdigest()[:32]
