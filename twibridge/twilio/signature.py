"""Which URL Twilio signed, and checking it with the ``twilio`` package.

The HMAC itself is :class:`twilio.request_validator.RequestValidator`'s; what
we add is the URL.  Behind nginx or a tunnel the app sees
``http://127.0.0.1:8080/voice`` while Twilio signed
``https://bridge.example.com/voice``: with ``[server] public_url`` set we
rebuild the signed URL as ``public_url + path + query`` (scheme swapped to
``wss``/``ws`` for the WebSocket upgrade, which Twilio signs with no params).
Without it we trust the request's own scheme and Host (direct exposure or
local development).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twilio.request_validator import RequestValidator


def public_base(public_url: str, scheme: str, host: str) -> str:
    """``https://host[:port][/prefix]`` that Twilio uses to reach us."""
    if public_url:
        return public_url.rstrip("/")
    http_scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return f"{http_scheme}://{host}"


def to_ws(url: str) -> str:
    """https→wss, http→ws: the Stream URL and the upgrade Twilio signs."""
    if url.startswith("https://"):
        return "wss://" + url[len("https://"):]
    if url.startswith("http://"):
        return "ws://" + url[len("http://"):]
    return url


def signed_url(public_url: str, scheme: str, host: str, path: str, query: str = "",
               websocket: bool = False) -> str:
    base = public_base(public_url, scheme, host)
    # A public_url with a path prefix (e.g. /twibridge behind a proxy) keeps
    # it; the app sees paths without it when the proxy strips the prefix.
    prefix = urlsplit(base).path
    if prefix and path.startswith(prefix):
        path = path[len(prefix):]
    url = base + path + (f"?{query}" if query else "")
    return to_ws(url) if websocket else url


class SignatureChecker:
    """``X-Twilio-Signature`` checks; a missing or empty header never passes."""

    def __init__(self, auth_token: str) -> None:
        self._validator = RequestValidator(auth_token)

    def valid(self, url: str, params: Any, signature: str | None) -> bool:
        if not signature:
            return False
        try:
            return bool(self._validator.validate(url, params, signature))
        except (ValueError, TypeError, UnicodeError):
            return False

    def sign(self, url: str, params: Any) -> str:
        """What Twilio would send (used by ``simulate-call`` and tests)."""
        return str(self._validator.compute_signature(url, params))
