"""A webhook receiver on 127.0.0.1: what a business's endpoint for ``call_ended`` does.

It verifies each request as a Standard Webhooks consumer would (raw body,
``webhook-id`` / ``-timestamp`` / ``-signature``, the library's ±5 min
window), records it, and answers from a script: a list of statuses used in
order (then 200), or ``hang`` to hold requests open until released (a
receiver that never answers).  ``delivered`` lists the requests it answered
2xx, deduplicated by nobody: a test asserts on duplicates itself.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import trio

from fakes.twilio_rest import lifespan, read_body, serve_asgi
from twibridge.webhooks import signing


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    signature_ok: bool

    @property
    def msg_id(self) -> str:
        return self.headers.get("webhook-id", "")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    secret: str
    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    requests: list[Received] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)
    release: trio.Event = field(default_factory=trio.Event)
    url: str = ""

    @property
    def delivered(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    async def wait(self, n: int, timeout: float = 10, delivered: bool = False) -> list[Received]:
        """Until ``n`` requests (or 2xx answers) have arrived."""
        with trio.fail_after(timeout):
            while len(self.delivered if delivered else self.requests) < n:
                await self.changed.wait()
        return self.delivered if delivered else self.requests

    def _note(self, r: Received) -> None:
        self.requests.append(r)
        self.changed.set()
        self.changed = trio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        try:
            signing.verify(self.secret, body, headers)
            ok = True
        except signing.BadSignature:
            ok = False
        if self.hang:
            self._note(Received(headers, body, 0, ok))
            await self.release.wait()
            return
        status = self.statuses.pop(0) if self.statuses else 200
        if not ok:
            status = 401
        self._note(Received(headers, body, status, ok))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})


@asynccontextmanager
async def receiver(secret: str, statuses: list[int] | None = None, hang: bool = False) -> AsyncIterator[Receiver]:
    r = Receiver(secret, list(statuses or []), hang)
    async with serve_asgi(r) as url:
        r.url = url + "/hooks/call-ended"
        try:
            yield r
        finally:
            r.release.set()
