"""Guards for Hypercorn 0.18 (trio worker) faults and gaps that reach past one connection.

**A write race that can end the whole server.**  Hypercorn's ``TCPServer``
serialises its socket writes with a lock, but its ``_close()`` calls
``send_eof()`` outside that lock, and Trio's ``send_eof`` checkpoints while it
holds the stream's send side.  When one task closes the connection (the ASGI
app finished) while the connection's read task answers the client's close
frame, that answer's ``send_all`` raises ``trio.BusyResourceError``.
Hypercorn only catches broken or closed streams there, so the error escapes
the connection handler and Trio's ``serve_listeners`` nursery: every
connection of the process ends with it.  The connection is closing when this
happens (the other task is shutting the socket down), so the write that lost
the race has nowhere to go: the guard treats it exactly as Hypercorn treats a
broken stream at that spot.

**A refused oversized message leaves a ghost call.**  A WebSocket message above
``websocket_max_message_size`` makes Hypercorn send a 1009 close frame and stop
reading, but it neither tells the app nor closes the connection: it waits for
the peer's close frame.  A peer that never sends one keeps the call live
(holding a ``max_calls`` slot and its agent session) until the idle timeout.
The guard finishes the job as Hypercorn does when the peer's close frame
arrives: the app gets ``websocket.disconnect`` with code 1009 and the
connection is closed.

**WebSocket compression is always offered.**  Hypercorn's ``Handshake``
accepts ``permessage-deflate`` whenever a client asks, with no setting to turn
it off, and inflates each frame before its size check: one 64 KB compressed
frame cost ~185 MB of memory (issue #23, 5).  Media Streams are base64 JSON
sent by Twilio uncompressed; the guard drops the client's offer, so the 101 never
carries ``Sec-WebSocket-Extensions``.

**No cap on connections.**  Hypercorn accepts every connection the kernel hands
it.  A connection past ``max_connections`` (a :class:`ConnectionCap` set on the
server's Hypercorn config as :data:`CAP_ATTRIBUTE`) is closed at once, before a
byte is read, so floods cannot use up the process's file descriptors (which
its agent and Redis connections need too).

:func:`install` wraps ``TCPServer.protocol_send``, ``TCPServer.run``,
``WSStream._send_wsproto_event`` and ``Handshake.accept`` once, at import of
:mod:`twibridge.server.app`.
``tests/test_hypercorn_fix.py`` drives the race with two tasks on a real
socket (and checks that unguarded, it raises);
``tests/test_fuzz.py::test_message_over_the_websocket_layers_limit_ends_the_call_at_once``
sends a real oversized message from a peer that never answers the close.
"""

from __future__ import annotations

from functools import wraps
from typing import Any, Awaitable, Callable

import trio
from hypercorn.events import Closed, Event
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.ws_stream import ASGIWebsocketState, Handshake, WSStream
from hypercorn.trio.tcp_server import TCPServer
from wsproto.events import CloseConnection
from wsproto.frame_protocol import CloseReason

_GUARD = "_twibridge_guard"


Method = Callable[..., Awaitable[None]]

#: The attribute of a Hypercorn ``Config`` holding that server's :class:`ConnectionCap`.
CAP_ATTRIBUTE = "twibridge_connection_cap"


class ConnectionCap:
    """Open connections of one server, and how many were refused past ``limit``."""

    def __init__(self, limit: int, on_refused: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0
        self.on_refused = on_refused


def install() -> None:
    """Install every guard (idempotent)."""
    _wrap_once(TCPServer, "protocol_send", _guard_close_race)
    _wrap_once(WSStream, "_send_wsproto_event", _guard_too_big)
    _wrap_once(TCPServer, "run", _guard_connection_cap)
    _wrap_once(Handshake, "accept", _guard_no_extensions)


def _wrap_once(owner: type, name: str, guard: Callable[[Any], Any]) -> None:
    original = getattr(owner, name)
    if getattr(original, _GUARD, False):
        return
    wrapper = wraps(original)(guard(original))
    setattr(wrapper, _GUARD, True)
    setattr(owner, name, wrapper)


def _guard_close_race(original: Method) -> Method:
    async def protocol_send(self: Any, event: Event) -> None:
        try:
            await original(self, event)
        except trio.BusyResourceError:
            # Another task is in send_eof: the connection is closing already.
            await self.protocol.handle(Closed())

    return protocol_send


def _guard_too_big(original: Method) -> Method:
    async def _send_wsproto_event(self: Any, event: Any) -> None:
        await original(self, event)
        # Only the read path sends 1009 while the app's socket is still open
        # (an app's own close moves the state to CLOSED before sending).
        if (
            isinstance(event, CloseConnection)
            and event.code == CloseReason.MESSAGE_TOO_BIG
            and self.state == ASGIWebsocketState.CONNECTED
            and not self.closed
            and self.app_put is not None
        ):
            self.closed = True  # later events and the app's own close are moot
            await self.app_put({"type": "websocket.disconnect", "code": CloseReason.MESSAGE_TOO_BIG.value})
            await self.send(StreamClosed(stream_id=self.stream_id))

    return _send_wsproto_event


def _guard_no_extensions(original: Callable[..., Any]) -> Callable[..., Any]:
    def accept(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.extensions = None  # the client's offer, ignored: nothing negotiated
        return original(self, *args, **kwargs)

    return accept


def _guard_connection_cap(original: Method) -> Method:
    async def run(self: Any) -> None:
        cap: ConnectionCap | None = getattr(self.config, CAP_ATTRIBUTE, None)
        if cap is None:
            await original(self)
            return
        if cap.open >= cap.limit:
            cap.refused += 1
            if cap.on_refused is not None:
                cap.on_refused()
            await trio.aclose_forcefully(self.stream)
            return
        cap.open += 1
        try:
            await original(self)
        finally:
            cap.open -= 1

    return run
