"""Quart-Trio's per-connection ASGI classes, adjusted for a media server.

Quart lets an app choose the class that adapts each ASGI connection to its
request/websocket objects (``asgi_http_class``, ``asgi_websocket_class``)
and the websocket object's class (``websocket_class``).  Routing, the route
handlers, the ``websocket`` context and error handling stay Quart's; these
classes only take per-message work off the path from Hypercorn to the handler
(a media stream is 50 messages a second each way, per call).  The request
class adds the one limit Quart lacks: a field cap on url-encoded forms
(the body size and time caps are Quart's own settings, set in ``app.py``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart.formparser import FormDataParser
from quart.signals import websocket_received, websocket_sent
from quart.wrappers.request import Body
from quart_trio.asgi import TrioASGIHTTPConnection, TrioASGIWebsocketConnection
from quart_trio.formparser import TrioFormDataParser
from quart_trio.wrappers import TrioRequest, TrioWebsocket
from werkzeug.datastructures import Headers, MultiDict
from werkzeug.exceptions import RequestEntityTooLarge

from twibridge.twilio.protocol import RemoteProtocolError

#: Hypercorn's close code for a message above its ``websocket_max_message_size``.
MESSAGE_TOO_BIG = 1009


async def _parse_urlencoded(parser: FormDataParser, body: Body, mimetype: str, content_length: int | None,
                            options: dict[str, str]) -> tuple[MultiDict[Any, Any], MultiDict[Any, Any]]:
    data: bytes = await body
    try:
        form = parse_qsl(data.decode(), keep_blank_values=True, max_num_fields=parser.max_form_parts)
    except UnicodeDecodeError:
        raise  # a ValueError: Quart's silent parse answers an empty form
    except ValueError:  # "Max number of fields exceeded"
        raise RequestEntityTooLarge(f"more than {parser.max_form_parts} form fields") from None
    cls = parser.cls or MultiDict
    return cls(form), cls()


class CappedFormParser(TrioFormDataParser):
    """Quart's form parser, with its field cap (``MAX_FORM_PARTS``) on url-encoded forms too.

    Quart 0.22 applies ``MAX_FORM_PARTS`` to multipart bodies only; Twilio
    posts ``application/x-www-form-urlencoded``.  Past the cap: 413.
    """

    parse_functions = {
        **TrioFormDataParser.parse_functions,
        "application/x-www-form-urlencoded": _parse_urlencoded,
        "application/x-url-encoded": _parse_urlencoded,
    }


class CappedRequest(TrioRequest):
    form_data_parser_class = CappedFormParser


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


class QuietWebsocketConnection(TrioASGIWebsocketConnection):
    """quart-trio's websocket connection, minus blinker signals nobody hears.

    Quart fires ``websocket_received`` / ``websocket_sent`` for every message
    (50 a second each way, per call); here they fire only when something is
    connected to them.  An empty binary frame reaches the handler as ``b""``
    (quart-trio's ``bytes or text`` made it ``None``).  A message Hypercorn
    refused as too big (close 1009) reaches the handler as a
    :class:`RemoteProtocolError` from ``receive()``, so the call ends as a
    protocol error instead of being cancelled like a hang-up.

    The relay task that moves each message from Hypercorn's channel to the
    handler's stays, on purpose.  Reading Hypercorn's channel directly from
    the handler was measured (~8 % less CPU per call), but it lets a handler
    finish while Hypercorn's read task is still answering the client's close
    frame.  Hypercorn 0.18 then shuts the socket down (``send_eof``, outside
    its send lock) while that task sends: unguarded, the ``BusyResourceError``
    ends the whole server (``tests/test_fuzz.py`` hit it 4 runs in 6); with
    :mod:`twibridge.server.hypercorn_fix` the client's close frame goes unanswered.
    With the relay the race stays out of reach (the guard remains the net).
    """

    async def handle_messages(self, nursery: trio.Nursery, receive: ASGIReceiveCallable) -> None:  # type: ignore[override]
        while True:
            event: Any = await receive()
            if event["type"] == "websocket.receive":
                data = event.get("bytes")
                message: str | bytes = data if data is not None else event["text"]
                if websocket_received.receivers:
                    await websocket_received.send_async(message, _sync_wrapper=self.app.ensure_async)  # type: ignore[arg-type]
                await self.send_channel.send(message)
            elif event["type"] == "websocket.disconnect":
                if event.get("code") == MESSAGE_TOO_BIG:
                    # Refused by the WebSocket layer: the handler ends the call
                    # as for any message over the cap (its end cancels us).
                    error = RemoteProtocolError("message too large (refused by the WebSocket layer, "
                                                "above twice [server] max_message_bytes)")
                    await self.send_channel.send(error)  # type: ignore[arg-type]
                    return
                break
        nursery.cancel_scope.cancel(reason="websocket disconnected")

    async def send_data(self, send: ASGISendCallable, data: str | bytes) -> None:
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
        data: str | bytes | RemoteProtocolError = await self._receive()
        if isinstance(data, RemoteProtocolError):  # see QuietWebsocketConnection.handle_messages
            raise data
        return data

    async def send(self, data: str | bytes) -> None:
        if not self._is_accepted:
            await self.accept()
        await self._send(data)
