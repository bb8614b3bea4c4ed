"""The ASGI layer in front of the Quart app: who the client is, and how many of its requests run.

Two jobs, both about traffic from the internet (docs/security.md):

* **The client's address.**  Behind nginx every connection comes from
  127.0.0.1, so a log line's ``remote`` (and a firewall rule built from it)
  would name the proxy.  When the connection's peer is one of
  ``[server] trusted_proxies``, the client is read from ``X-Forwarded-For``:
  the right-most entry that is not itself a trusted proxy (what nginx's
  ``real_ip_recursive`` does).  From any other peer the header is ignored, so a
  client cannot choose its own address.  Hypercorn's ``ProxyFixMiddleware``
  trusts a number of hops from *any* peer and also rewrites scheme and Host
  (which feed the signed URL), and werkzeug's is WSGI-only: hence this.
* **A cap per client address** (``[server] max_connections_per_address``) on
  concurrent HTTP requests and WebSocket handshakes not yet answered: a client
  past it gets 503 at once, before its body is read.  A WebSocket stops counting
  once the app accepted it (its signature checked): from then on it is a call,
  bounded by ``max_calls``; Twilio opens many streams from few addresses.

The process-wide connection cap sits at accept, in
:mod:`twibridge.server.hypercorn_fix` (a connection past it never reaches here).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any, Awaitable, Callable, Iterable

from twibridge.logs import get_logger

log = get_logger("twibridge.server.guard")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


class LogBudget:
    """First ``first`` occurrences logged in full, then only at 2×, 4×, 8× … (with the count).

    For warnings an attacker can trigger at will (bad signatures, refusals):
    the log grows with the logarithm of a flood, not with it, and the counter in
    the sparse lines (and the metrics) still says how big it was.  No clock: a
    process-long budget, so the same flood is not re-logged in full each minute.
    """

    def __init__(self, first: int = 20) -> None:
        self.first = first
        self.seen = 0
        self._next_summary = 2 * first

    def take(self) -> bool:
        """Count one occurrence; True if it should be logged in full."""
        self.seen += 1
        return self.seen <= self.first

    def summary_due(self) -> bool:
        """True (once) when a suppressed occurrence reaches the next power-of-two mark."""
        if self.seen >= self._next_summary:
            self._next_summary *= 2
            return True
        return False


def truncate(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters (a marker says how long it was)."""
    return text if len(text) <= limit else f"{text[:limit]}…(+{len(text) - limit} chars)"


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:443"
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # "10.0.0.1:443"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def forwarded_client(peer: str, headers: Iterable[tuple[bytes, bytes]], trusted: tuple[Network, ...]) -> str:
    """The client's address: ``peer``, or from ``X-Forwarded-For`` when ``peer`` is a trusted proxy."""

    def is_trusted(text: str) -> bool:
        addr = _address(text)
        return addr is not None and any(addr in net for net in trusted)

    if not trusted or not is_trusted(peer):
        return peer
    hops: list[str] = []
    for name, value in headers:
        if name.lower() == b"x-forwarded-for":
            hops.extend(part.strip() for part in value.decode("latin-1").split(","))
    for hop in reversed(hops):
        if not hop:
            continue
        if _address(hop) is None:
            return peer  # garbage in the header: keep what we know
        if not is_trusted(hop):
            return str(_address(hop))
    return peer


class Guard:
    """ASGI middleware: the client from trusted proxies, then the per-address cap."""

    def __init__(self, app: ASGIApp, *, trusted_proxies: Iterable[str], per_address: int,
                 on_refused: Callable[[], None] | None = None) -> None:
        self.app = app
        self.trusted = parse_networks(trusted_proxies)
        self.per_address = per_address
        self.on_refused = on_refused
        self.in_flight: Counter[str] = Counter()
        self.budget = LogBudget()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        peer = (scope.get("client") or ("", 0))[0]
        client = forwarded_client(peer, scope.get("headers", ()), self.trusted)
        if client != peer:
            scope = {**scope, "client": (client, 0)}
        if self.in_flight[client] >= self.per_address:
            await self._refuse(kind, client, scope, send)
            return
        self.in_flight[client] += 1
        counted = True

        def release() -> None:
            nonlocal counted
            if counted:
                counted = False
                self.in_flight[client] -= 1
                if self.in_flight[client] <= 0:
                    del self.in_flight[client]

        async def guarded_send(message: Any) -> None:
            # A WebSocket answered (accepted, refused or closed) is no longer a
            # pending handshake: release it before the send, which may block.
            if kind == "websocket":
                release()
            await send(message)

        try:
            await self.app(scope, receive, guarded_send if kind == "websocket" else send)
        finally:
            release()

    async def _refuse(self, kind: str, client: str, scope: Any, send: Any) -> None:
        if self.on_refused is not None:
            self.on_refused()
        if self.budget.take():
            log.warning("http.too_many_per_address", remote=client, path=truncate(str(scope.get("path", ""))),
                        limit=self.per_address)
        elif self.budget.summary_due():
            log.warning("http.too_many_per_address", remote=client, limit=self.per_address,
                        refused_total=self.budget.seen, message="further refusals logged at 2x counts")
        body = b"too many concurrent requests from this address\n"
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        if kind == "http":
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 503, "headers": headers[:2]})
            await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
        else:
            await send({"type": "websocket.close", "code": 1013})
