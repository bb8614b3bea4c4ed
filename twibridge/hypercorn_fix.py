"""A guard for one Hypercorn 0.18 (trio worker) race that can end the whole server.

Hypercorn's ``TCPServer`` serialises its socket writes with a lock, but its
``_close()`` calls ``send_eof()`` outside that lock, and Trio's ``send_eof``
checkpoints while it holds the stream's send side.  When one task closes the
connection (the ASGI app finished) while the connection's read task answers
the client's close frame, that answer's ``send_all`` raises
``trio.BusyResourceError``.  Hypercorn only catches broken or closed streams
there, so the error escapes the connection handler and Trio's
``serve_listeners`` nursery: every connection of the process ends with it.

The connection is closing when this happens (the other task is shutting
the socket down), so the write that lost the race has nowhere to go.  The
guard treats it exactly as Hypercorn treats a broken stream at that spot.
It wraps ``TCPServer.protocol_send`` once, at import of :mod:`twibridge.server`.
``tests/test_hypercorn_fix.py`` drives the race with two tasks on a real
socket (and checks that unguarded, it raises).
"""

from __future__ import annotations

from functools import wraps
from typing import Any

import trio
from hypercorn.events import Closed, Event
from hypercorn.trio.tcp_server import TCPServer

_GUARD = "_twibridge_close_race_guard"


def install() -> None:
    """Wrap ``TCPServer.protocol_send`` (idempotent)."""
    original = TCPServer.protocol_send
    if getattr(original, _GUARD, False):
        return

    @wraps(original)
    async def protocol_send(self: Any, event: Event) -> None:
        try:
            await original(self, event)
        except trio.BusyResourceError:
            # Another task is in send_eof: the connection is closing already.
            await self.protocol.handle(Closed())

    setattr(protocol_send, _GUARD, True)
    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]
