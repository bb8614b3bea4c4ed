"""twibridge.server.hypercorn_fix: a write that races another task's use of the socket's send side.

(The other guard, for messages above Hypercorn's size limit, is tested end to
end in ``test_fuzz.py``.)

Hypercorn's own ``TCPServer.protocol_send`` runs against a real loopback
socket.  Another task holds the stream's send side outside Hypercorn's send
lock (as ``send_eof`` does in ``TCPServer._close``): here a large
``send_all`` the peer never reads, so the race is deterministic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.ws_stream import WSStream
from hypercorn.trio.tcp_server import TCPServer

from twibridge.server import hypercorn_fix


class Connection:
    """The three attributes of a TCPServer that ``protocol_send`` uses."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.send_lock = trio.Lock()
        self.handled: list[Event] = []
        self.protocol = self

    async def handle(self, event: Event) -> None:  # hypercorn's ProtocolWrapper.handle
        self.handled.append(event)


@asynccontextmanager
async def send_side_busy() -> AsyncIterator[Connection]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.send_all, b"\0" * 50_000_000)  # the peer never reads: blocks mid-send
            await trio.testing.wait_all_tasks_blocked()
            yield Connection(server)
            nursery.cancel_scope.cancel()
    finally:
        for s in (client, server, *listeners):
            await s.aclose()


async def test_unguarded_the_race_raises_out_of_hypercorn() -> None:
    hypercorn_fix.install()
    unguarded: Any = TCPServer.protocol_send.__wrapped__  # type: ignore[attr-defined]
    async with send_side_busy() as conn:
        with pytest.raises(trio.BusyResourceError):
            await unguarded(conn, RawData(data=b"\x88\x02\x03\xe8"))


async def test_guarded_the_losing_write_closes_the_connection() -> None:
    hypercorn_fix.install()
    hypercorn_fix.install()  # idempotent: wrapped once
    assert not getattr(TCPServer.protocol_send.__wrapped__, "_twibridge_guard", False)  # type: ignore[attr-defined]
    assert not getattr(WSStream._send_wsproto_event.__wrapped__, "_twibridge_guard", False)  # type: ignore[attr-defined]
    async with send_side_busy() as conn:
        await TCPServer.protocol_send(conn, RawData(data=b"\x88\x02\x03\xe8"))  # type: ignore[arg-type]
    assert [type(e) for e in conn.handled] == [Closed]
