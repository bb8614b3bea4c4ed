"""Standard Webhooks signatures (https://www.standardwebhooks.com), sans-IO.

The HMAC itself is the ``standardwebhooks`` reference library's; this module
adds what twibridge needs around it: a check of the secret's form for
``validate-config`` (a bad secret is a config error, never a surprise at call
time), fresh ids, and the three headers as one mapping.  The signed bytes are
``{id}.{timestamp}.{body}`` over the *exact* body sent, so a receiver verifies
the raw bytes, never re-serialised JSON.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import datetime, timezone
from typing import Mapping

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PREFIX = "whsec_"
#: The spec's range for a symmetric secret's key length.
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64
HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE = "webhook-id", "webhook-timestamp", "webhook-signature"


class BadSignature(Exception):
    """A request whose Standard Webhooks headers do not verify."""


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` is not a usable ``whsec_<base64>`` secret, or None."""
    if not secret.startswith(PREFIX):
        return "expected a Standard Webhooks secret, 'whsec_' followed by base64"
    try:
        key = base64.b64decode(secret[len(PREFIX):] + "==", validate=False)
    except (binascii.Error, ValueError):
        return "the part after 'whsec_' is not base64"
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        return f"the key must be {MIN_KEY_BYTES}-{MAX_KEY_BYTES} bytes (got {len(key)})"
    return None


def new_secret() -> str:
    """A fresh secret (``twibridge`` docs and tests use it)."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_id() -> str:
    """A unique ``webhook-id`` (no ``.``: the spec forbids it in signed parts)."""
    return "msg_" + secrets.token_urlsafe(18).replace(".", "_")


def sign_headers(secret: str, body: bytes, msg_id: str, timestamp: float) -> dict[str, str]:
    """The three headers for ``body`` sent at unix time ``timestamp``.

    Raises:
        ValueError: ``secret`` is not a valid secret (config validation
            should have caught it).
    """
    problem = secret_problem(secret)
    if problem is not None:
        raise ValueError(problem)
    when = datetime.fromtimestamp(int(timestamp), tz=timezone.utc)
    signature = Webhook(secret).sign(msg_id, when, body.decode("utf-8"))
    return {HEADER_ID: msg_id, HEADER_TIMESTAMP: str(int(timestamp)), HEADER_SIGNATURE: signature}


def verify(secret: str, body: bytes, headers: Mapping[str, str]) -> None:
    """Check a signed request (the receiving side: tests, examples, ``/vapi``-style peers).

    Raises:
        BadSignature: missing headers, a timestamp outside ±5 min, or no
            matching ``v1`` signature.
    """
    try:
        Webhook(secret).verify(body, dict(headers), json_parse=False)
    except (WebhookVerificationError, ValueError, binascii.Error) as exc:
        raise BadSignature(str(exc) or type(exc).__name__) from None
