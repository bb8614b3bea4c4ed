"""A fake pre-call lookup (the business's routing endpoint) on 127.0.0.1.

It verifies each request's Standard Webhooks signature with the
``standardwebhooks`` reference library (not twibridge's own signing code)
and refuses a bad one with 401, as a careful receiver would; then it answers
what the test set: a JSON value, raw bytes, a status, or nothing, ever.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import trio
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from fakes.twilio_rest import lifespan, read_body, serve_asgi


@dataclass
class LookupRequest:
    body: dict[str, Any]
    headers: dict[str, str]
    verified: bool


@dataclass
class FakeLookup:
    secret: str
    answer: Any = field(default_factory=dict)
    raw: bytes | None = None
    status: int = 200
    hang: bool = False
    requests: list[LookupRequest] = field(default_factory=list)
    received: trio.Event = field(default_factory=trio.Event)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = await read_body(receive)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            Webhook(self.secret).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        self.requests.append(LookupRequest(json.loads(body), headers, verified))
        self.received.set()
        if self.hang:
            await trio.sleep_forever()
        status, payload = (self.status, self.raw if self.raw is not None else json.dumps(self.answer).encode())
        if not verified:
            status, payload = 401, b'{"error": "bad signature"}'
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        async with serve_asgi(self.app) as url:
            yield url + "/route"
