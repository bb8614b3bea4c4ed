"""Quart-Trio's per-connection ASGI classes, adjusted for a media server.

Quart lets an app choose the class that adapts each ASGI connection to its
request/websocket objects (``asgi_http_class``, ``asgi_websocket_class``)
and the websocket object's class (``websocket_class``).  Routing, the route
handlers, the ``websocket`` context and error handling stay Quart's; these
classes only take per-message work off the path from Hypercorn to the handler
(a media stream is 50 messages a second each way, per call).
"""

from __future__ import annotations

from typing import Any

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, WebsocketScope
from quart.asgi import ASGIWebsocketConnection
from quart.signals import websocket_received, websocket_sent
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection, TrioASGIWebsocketConnection
from quart_trio.wrappers import TrioWebsocket
from werkzeug.datastructures import Headers


class ClosingHTTPConnection(TrioASGIHTTPConnection):
    """quart-trio cancels the request nursery inside hypercorn's final send,
    which interrupts the connection close: keep-alive sockets then leak.
    Shield that last body send (bounded) so the close completes."""

    async def handle_request(self, nursery: trio.Nursery, request: Any, send: Any) -> None:  # type: ignore[override]
        async def shielded_send(message: Any) -> None:
            if message.get("type") == "http.response.body" and not message.get("more_body", False):
                with trio.move_on_after(5, shield=True):
                    await send(message)
            else:
                await send(message)

        await super().handle_request(nursery, request, shielded_send)


class DirectWebsocketConnection(TrioASGIWebsocketConnection):
    """A websocket whose ``receive()`` reads Hypercorn's event channel itself.

    quart-trio runs a relay task per socket that moves every message from
    Hypercorn's channel into a second channel the handler reads: one more
    Trio task switch (and a blinker signal) per message.  A media stream is
    50 messages a second per call, and the relay was 7 % of the server's CPU
    at 100 calls (py-spy, docs/benchmarks.md).  Here the handler's own
    ``receive()`` takes the next ASGI event directly.

    Semantics kept from quart-trio: ``websocket_received`` still fires (when
    anything listens), and a ``websocket.disconnect`` cancels the handler,
    which Quart's relay did by cancelling the connection's nursery.  The one
    difference: a disconnect is seen when the handler next reads, not while
    it does something else; our media handler always has a reader waiting.
    An *empty* binary frame arrives as ``b""`` (quart-trio's relay turned it
    into ``None``).
    """

    def __init__(self, app: QuartTrio, scope: WebsocketScope) -> None:  # no relay channel to open
        self.app = app
        self.scope = scope
        self._accepted = False
        self._closed = False
        self._asgi_receive: ASGIReceiveCallable | None = None
        self._scope = trio.CancelScope()
        # _create_websocket_from_scope hands ``self.receive_channel.receive``
        # to the Websocket object: point it at the direct read below.
        self.receive_channel = self  # type: ignore[assignment]

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        self._asgi_receive = receive
        websocket = self._create_websocket_from_scope(send)
        with self._scope:
            await ASGIWebsocketConnection.handle_websocket(self, websocket, send)

    async def receive(self) -> str | bytes:
        """The next message; on disconnect, cancel the handler like quart-trio."""
        assert self._asgi_receive is not None
        while True:
            event: Any = await self._asgi_receive()
            if event["type"] == "websocket.receive":
                data = event.get("bytes")
                message: str | bytes = data if data is not None else event["text"]
                if websocket_received.receivers:
                    await websocket_received.send_async(message, _sync_wrapper=self.app.ensure_async)  # type: ignore[arg-type]
                return message
            if event["type"] == "websocket.disconnect":
                self._scope.cancel(reason="websocket disconnected")
                await trio.lowlevel.checkpoint()  # raises Cancelled

    async def send_data(self, send: ASGISendCallable, data: str | bytes) -> None:
        """Quart's, minus the ``websocket_sent`` signal when nothing listens."""
        if isinstance(data, str):
            await send({"type": "websocket.send", "bytes": None, "text": data})
        else:
            await send({"type": "websocket.send", "bytes": data, "text": None})
        if websocket_sent.receivers:
            await websocket_sent.send_async(data, _sync_wrapper=self.app.ensure_async)  # type: ignore[arg-type]


class MediaWebsocket(TrioWebsocket):
    """Quart-Trio's websocket object, without per-message accept bookkeeping.

    Quart's ``send()`` and ``receive()`` call ``accept()`` before every
    message (a ``Headers`` object built and an accept callback awaited, a
    no-op once accepted): 3-4 % of the server's CPU at 80 calls.  Once the
    handshake is done, this class goes straight to the transport.  An
    unaccepted socket still accepts implicitly on first use, as in Quart.
    """

    _is_accepted = False

    async def accept(self, headers: dict[str, str] | Headers | None = None,
                     subprotocol: str | None = None) -> None:
        await super().accept(headers, subprotocol)
        self._is_accepted = True

    async def receive(self) -> str | bytes:
        if not self._is_accepted:
            await self.accept()
        data: str | bytes = await self._receive()
        return data

    async def send(self, data: str | bytes) -> None:
        if not self._is_accepted:
            await self.accept()
        await self._send(data)
