"""A signed JSON ``POST`` with a deadline and a bounded answer.

Everything twibridge asks of the business's systems goes through
:func:`post_signed`: a tool call, the pre-call routing lookup, a post-call
report.  Whatever the far end does (answers 500, answers garbage, answers
10 MB, never answers, refuses the connection) the caller gets a
:class:`Reply` or a :class:`DeliveryError` with a short reason that names
neither the URL nor the secret, within ``timeout_s``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable

import httpx
import trio

from twibridge.webhooks import signing

#: The most of an answer we read; a larger one is refused (a tool result is
#: spoken by a model, a routing answer is a few fields).
MAX_REPLY_BYTES = 256 * 1024
USER_AGENT = "twibridge"


class DeliveryError(Exception):
    """The request did not get a usable answer; ``reason`` is short and safe to show."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON; :class:`DeliveryError` when it is not."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise DeliveryError("the answer is not valid JSON", self.status) from None


def encode(payload: Any) -> bytes:
    """The exact bytes that are signed and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


async def post_signed(client: httpx.AsyncClient, url: str, body: bytes, *, secret: str, timeout_s: float,
                      msg_id: str | None = None, clock: Callable[[], float] = time.time,
                      max_reply_bytes: int = MAX_REPLY_BYTES) -> Reply:
    """POST ``body`` (JSON bytes) to ``url``, signed; the answer whatever its status.

    ``msg_id`` is kept by the caller across retries of one delivery (the
    receiver dedupes on it); a new one is made when None.

    Raises:
        DeliveryError: timeout, connection refused or broken, or an answer
            over ``max_reply_bytes``.
    """
    headers = {"content-type": "application/json", "user-agent": USER_AGENT,
               **signing.sign_headers(secret, body, msg_id or signing.new_id(), clock())}
    with trio.move_on_after(timeout_s) as scope:
        try:
            async with client.stream("POST", url, content=body, headers=headers) as resp:
                chunks: list[bytes] = []
                size = 0
                # An honest Content-Length over the cap is refused before reading.  Otherwise
                # the stream is read to its end (under the deadline) but kept only up to the cap:
                # leaving httpx's nested body generators early leaves them to the garbage
                # collector (a ResourceWarning per generator, the connection held till then).
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_reply_bytes:
                    raise DeliveryError(f"the answer is larger than {max_reply_bytes} bytes", resp.status_code)
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size <= max_reply_bytes:
                        chunks.append(chunk)
                if size > max_reply_bytes:
                    raise DeliveryError(f"the answer is larger than {max_reply_bytes} bytes", resp.status_code)
                return Reply(resp.status_code, b"".join(chunks), _retry_after(resp.headers.get("retry-after")))
        except httpx.TimeoutException:
            raise DeliveryError(f"no answer within {timeout_s:g} s") from None
        except httpx.ConnectError:
            raise DeliveryError("connection refused or unreachable") from None
        except (httpx.HTTPError, OSError) as exc:
            raise DeliveryError(f"connection failed ({type(exc).__name__})") from None
    assert scope.cancelled_caught
    raise DeliveryError(f"no answer within {timeout_s:g} s")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
