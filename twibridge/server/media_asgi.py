"""``/media-stream`` served at the ASGI level, in front of the Quart-Trio app.

Why: a media stream is 50 messages a second each way, per call.  Through
Quart every inbound message crossed quart-trio's relay task (Hypercorn's
queue → the relay → the websocket's queue → the handler): one task hop per
frame, ~6 % of the server's CPU with an agent leg and more on the echo path
(docs/benchmarks.md, "Findings").  Here the call's reader awaits Hypercorn's
ASGI ``receive`` itself and the speaker writes with Hypercorn's ``send``.

:class:`MediaStreamRoute` wraps ``app.asgi_app`` (Quart's documented
extension point): a ``websocket`` scope for :data:`PATH` goes to the
handler ``app.py`` gives it, over a :class:`MediaSocket`; every other scope
(webhooks, ``/healthz``, ``/metrics``, lifespan, other paths) reaches Quart
unchanged.  :class:`~twibridge.server.guard.Guard` stays outside both.

What quart-trio did for this route and is kept, on purpose:

* **A disconnect cancels the call** (quart-trio's relay cancelled the
  handler's nursery): the call's teardown then runs as for any hang-up
  (``caller-dropped`` unless a ``stop`` came first).
* **A message Hypercorn refused as too big** (disconnect code 1009, see
  :mod:`twibridge.server.hypercorn_fix`) raises
  :class:`~twibridge.twilio.protocol.RemoteProtocolError` from ``receive``: the
  call ends as a protocol error, not as a hang-up.
* **Refusals before accepting** go out as an HTTP response on the upgrade
  (ASGI's ``websocket.http.response``), with Quart's status, body and
  content type; a handler that returns without accepting gets Quart's
  ``websocket.close`` (Hypercorn answers 403).  An accepted socket the handler
  did not close is closed 1000, as Quart does.

**The close race** ("Found on the way" in docs/benchmarks.md).  With no relay
between them, the handler's writes and Hypercorn's read task meet at the
close: the read task shuts the socket down (``send_eof``, outside Hypercorn's
send lock) right after the peer's close frame, while our own close frame is
still being written.  :mod:`twibridge.server.hypercorn_fix` now makes that
shutdown wait for the write in flight (it lost our close frame ~1 time in 10
here; the old guard stays the net).  And after its close the route waits (at
most :data:`CLOSE_WAIT_S`) for Hypercorn's ``websocket.disconnect``, so the
peer's close frame reaches an open socket and is answered, instead of an RST.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import trio
from werkzeug.sansio.utils import get_host

from twibridge.logs import get_logger
from twibridge.twilio.protocol import RemoteProtocolError

log = get_logger("twibridge.server")

#: The path served here (``app.py`` points Twilio's ``<Stream url>`` at it).
PATH = "/media-stream"
#: How long a closed socket waits for the peer's close frame before the app returns.
CLOSE_WAIT_S = 2.0
#: Hypercorn's close code for a message above its ``websocket_max_message_size``.
MESSAGE_TOO_BIG = 1009

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


class MediaSocket:
    """One ``/media-stream`` connection over ASGI ``receive``/``send``.

    The request facts the handler checks (as Quart's ``websocket`` object
    would give them: ``remote``, ``scheme``, ``host``, ``path``,
    ``query_string``, :meth:`header`), the handshake (:meth:`accept`,
    :meth:`reject`), and the :class:`twibridge.call.runner.Transport` the call
    uses (:meth:`receive`, :meth:`send`, :meth:`close`).
    """

    def __init__(self, scope: Any, receive: Callable[[], Awaitable[Any]],
                 send: Callable[[Any], Awaitable[None]], cancel: trio.CancelScope) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self._cancel = cancel  # the handler's: a disconnect cancels it (as quart-trio's relay did)
        self.accepted = self.answered = self.closed = self.disconnected = False
        client = scope.get("client")
        self.remote: str = client[0] if client else "<local>"  # Quart's remote_addr
        self.scheme: str = scope.get("scheme", "ws")
        self.path: str = "/" + scope["path"].lstrip("/")
        self.query_string: bytes = scope.get("query_string", b"")

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), as Quart's ``headers.get`` gives it."""
        want = name.lower().encode("latin-1")
        for key, value in self.scope.get("headers", ()):
            if key.lower() == want:
                return str(value.decode("latin-1"))
        return None

    @property
    def host(self) -> str:
        """The Host the client asked for, as werkzeug (and so Quart) reads it: default port dropped."""
        server = self.scope.get("server")
        return get_host(self.scheme, self.header("host"), tuple(server) if server else None)

    # ---------------------------------------------------------------- handshake

    async def accept(self) -> None:
        self.accepted = self.answered = True
        await self._send({"type": "websocket.accept", "subprotocol": None, "headers": []})

    async def reject(self, status: int, body: str) -> None:
        """Answer the upgrade with an HTTP response (Quart's ``Response(body, status, "text/plain")``)."""
        self.answered = True
        data = body.encode()
        if "websocket.http.response" not in (self.scope.get("extensions") or {}):
            await self._send({"type": "websocket.close", "code": 1000})  # Hypercorn answers 403
            return
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(data)).encode())]
        await self._send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await self._send({"type": "websocket.http.response.body", "body": data, "more_body": False})

    # ---------------------------------------------------------------- the call's transport

    async def receive(self) -> str | bytes:
        """The next message; a disconnect cancels the handler (1009: a protocol error instead)."""
        while True:
            event = await self._receive()
            kind = event["type"]
            if kind == "websocket.receive":
                data: bytes | None = event.get("bytes")
                return data if data is not None else str(event["text"])
            if kind == "websocket.disconnect":
                return await self._disconnected(event.get("code"))
            # "websocket.connect" (taken before the handler runs) is all ASGI has besides

    async def _disconnected(self, code: int | None) -> str | bytes:
        first = not self.disconnected
        self.disconnected = True
        if first and code == MESSAGE_TOO_BIG:
            raise RemoteProtocolError("message too large (refused by the WebSocket layer, "
                                      "above twice [server] max_message_bytes)")
        self._cancel.cancel(reason="websocket disconnected")
        await trio.lowlevel.checkpoint()  # raises Cancelled, unless a shield covers the caller
        raise RemoteProtocolError("socket closed without stop")

    async def send(self, data: str) -> None:
        await self._send({"type": "websocket.send", "bytes": None, "text": data})

    async def close(self, code: int, reason: str = "") -> None:
        """Close once (later calls do nothing); after a disconnect Hypercorn drops it."""
        if self.closed:
            return
        self.closed = True
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def settle(self, wait_s: float) -> None:
        """After our close: until Hypercorn says the connection is gone (bounded), messages dropped."""
        if not self.accepted or self.disconnected:
            return
        with trio.move_on_after(wait_s):
            while (await self._receive())["type"] != "websocket.disconnect":
                pass
            self.disconnected = True


Handler = Callable[[MediaSocket], Awaitable[None]]


class MediaStreamRoute:
    """ASGI middleware: websocket scopes for :data:`PATH` to ``handler``, the rest to ``app``."""

    def __init__(self, app: ASGIApp, handler: Handler, *, close_wait_s: float = CLOSE_WAIT_S) -> None:
        self.app = app
        self.handler = handler
        self.close_wait_s = close_wait_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "websocket" or scope.get("path") != PATH:
            await self.app(scope, receive, send)
            return
        if (await receive())["type"] != "websocket.connect":  # gone before the app ran
            return
        with trio.CancelScope() as cancel:
            sock = MediaSocket(scope, receive, send, cancel)
            try:
                await self.handler(sock)
            except Exception:  # our bug: this socket ends, never the server
                log.exception("ws.internal_error", remote=sock.remote)
                if not sock.answered:
                    await sock.reject(500, "internal error\n")
                elif sock.accepted:
                    await sock.close(1011, "internal error")
        if not sock.answered:
            await send({"type": "websocket.close", "code": 1000})  # Quart's answer: Hypercorn sends 403
        elif sock.accepted:
            await sock.close(1000)  # dropped by Hypercorn after a disconnect
            await sock.settle(self.close_wait_s)
