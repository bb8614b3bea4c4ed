"""twibridge.server.hypercorn_fix: Hypercorn's writes take a free send lock without a pass of the run loop.

A real ``TCPServer`` (Hypercorn's class, guards installed) writes to a real
loopback socket.  Before the guard, every write first waited one pass behind
every other call's ready work (``async with trio.Lock()``); a held lock must
still be waited for, in turn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing
from hypercorn.config import Config
from hypercorn.events import RawData
from hypercorn.trio.tcp_server import TCPServer

from passes import Passes, run_loop_passes
from twibridge.locks import EagerLock
from twibridge.server import hypercorn_fix


class Recorded:
    """The server's socket (what ``protocol_send`` uses of it), noting the pass of each write."""

    def __init__(self, stream: trio.SocketStream, passes: Passes) -> None:
        self.stream = stream
        self.passes = passes
        self.writes: list[tuple[int, bytes]] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append((self.passes.n, bytes(data)))
        await self.stream.send_all(data)

    async def aclose(self) -> None:
        await self.stream.aclose()


@asynccontextmanager
async def server_connection(passes: Passes) -> AsyncIterator[tuple[TCPServer, Recorded, trio.SocketStream]]:
    hypercorn_fix.install()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    client = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
    accepted = await listeners[0].accept()
    stream = Recorded(accepted, passes)
    server = TCPServer(None, Config(), None, None, stream)  # type: ignore[arg-type]
    try:
        yield server, stream, client
    finally:
        for s in (client, stream, *listeners):
            await s.aclose()


async def test_a_write_goes_out_in_the_pass_it_is_sent() -> None:
    with run_loop_passes() as passes:
        async with server_connection(passes) as (server, stream, client):
            assert isinstance(server.send_lock, EagerLock)
            for i in range(3):
                sent_in = passes.n
                await server.protocol_send(RawData(b"frame %d" % i))
                assert stream.writes[-1] == (sent_in, b"frame %d" % i)
            got = b""
            while len(got) < 21:
                got += await client.receive_some()
            assert got == b"frame 0frame 1frame 2"


async def test_a_write_behind_a_held_lock_waits_its_turn() -> None:
    with run_loop_passes() as passes:
        async with server_connection(passes) as (server, stream, _client):
            async with trio.open_nursery() as nursery:
                async with server.send_lock:  # e.g. Hypercorn's _close, under the lock (the close-race guard)
                    nursery.start_soon(server.protocol_send, RawData(b"a"))
                    await trio.testing.wait_all_tasks_blocked()
                    nursery.start_soon(server.protocol_send, RawData(b"b"))
                    await trio.testing.wait_all_tasks_blocked()
                    assert stream.writes == []
                    assert server.send_lock.statistics().tasks_waiting == 2
            assert [data for _, data in stream.writes] == [b"a", b"b"]
