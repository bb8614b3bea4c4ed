"""A business backend for tool calls: a real HTTP server (Hypercorn, 127.0.0.1, port 0).

It verifies every request's Standard Webhooks signature (401 otherwise, like
a careful receiver) and answers by path, so one server plays every backend
a test needs:

* ``/lookup_order`` — ``{"order_number", "status": "shipped"}`` (or a 404
  JSON for order "404"); ``/echo`` — the request's ``arguments`` back;
* ``/slow?s=N`` — the same after N seconds (trio time: autojump-friendly);
* ``/never`` — never answers (until the client hangs up); ``/500`` — HTTP 500; ``/garbage`` — 200 with
  a body that is not JSON; ``/list`` — 200 with a JSON array.

``requests`` records what arrived (headers lower-cased, the raw body);
``in_flight`` / ``max_in_flight`` count concurrent requests.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qs

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from twibridge.webhooks import signing

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ToolBackend:
    secret: str
    requests: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    changed: trio.Event = field(default_factory=trio.Event)
    disconnects: int = 0

    def _poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_requests(self, n: int) -> None:
        while len(self.requests) < n:
            await self.changed.wait()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": kind + ".complete"})  # lifespan.startup / lifespan.shutdown
                if kind == "lifespan.shutdown":
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(Received(scope["path"], headers, body))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._poke()
        try:
            if scope["path"] == "/never" and self._signed(headers, body):
                # Never answer; end when the client goes away (so nothing lingers after it).
                while (await receive())["type"] != "http.disconnect":
                    pass
                self.disconnects += 1
                return
            status, answer = await self._answer(scope, headers, body)
        finally:
            self.in_flight -= 1
            self._poke()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})

    def _signed(self, headers: dict[str, str], body: bytes) -> bool:
        try:
            signing.verify(self.secret, body, headers)
        except signing.BadSignature:
            return False
        return True

    async def _answer(self, scope: Scope, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if not self._signed(headers, body):
            return 401, b'{"error":"bad signature"}'
        path = scope["path"]
        query = parse_qs(scope.get("query_string", b"").decode())
        args = json.loads(body).get("arguments", {})
        if path == "/slow":
            await trio.sleep(float(query.get("s", ["1"])[0]))
            return 200, json.dumps({"slept": True, **args}).encode()
        if path == "/500":
            return 500, b'{"error":"internal"}'
        if path == "/garbage":
            return 200, b"<html>oops"
        if path == "/list":
            return 200, b"[1, 2]"
        if path == "/lookup_order":
            number = str(args.get("order_number", ""))
            if number == "404":
                return 404, b'{"error":"no such order"}'
            return 200, json.dumps({"order_number": number, "status": "shipped"}).encode()
        return 200, json.dumps(args).encode()


@asynccontextmanager
async def tool_backend(secret: str) -> AsyncIterator[tuple[str, ToolBackend]]:
    """Serve a :class:`ToolBackend` for the block; yield its base URL and itself."""
    backend = ToolBackend(secret)
    hc = HypercornConfig()
    hc.bind = ["127.0.0.1:0"]
    hc.accesslog = hc.errorlog = None
    hc.graceful_timeout = 0.1
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(backend, hc, shutdown_trigger=stop.wait,  # type: ignore[arg-type]
                                                              task_status=task_status))
        try:
            yield binds[0], backend
        finally:
            stop.set()
