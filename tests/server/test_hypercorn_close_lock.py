"""twibridge.server.hypercorn_fix: ``TCPServer._close`` shuts the socket down only between writes.

Hypercorn 0.18's ``_close`` calls ``send_eof`` outside the send lock, so a
write in flight (a close frame, typically) lost the race and was dropped
(``tests/server/test_media_asgi.py`` drives it end to end).  Here
``_close`` runs against a stand-in connection whose lock another task holds.
"""

from __future__ import annotations

from types import SimpleNamespace

import trio
import trio.testing
from hypercorn.trio.tcp_server import TCPServer

from twibridge.server import hypercorn_fix


class Stream:
    def __init__(self, order: list[str]) -> None:
        self.order = order

    async def send_eof(self) -> None:
        self.order.append("eof")

    async def aclose(self) -> None:
        self.order.append("aclose")


def connection(order: list[str]) -> SimpleNamespace:
    return SimpleNamespace(send_lock=trio.Lock(), stream=Stream(order))


async def test_close_waits_for_the_write_under_the_send_lock() -> None:
    hypercorn_fix.install()
    order: list[str] = []
    conn = connection(order)

    async def writer() -> None:
        async with conn.send_lock:
            await trio.testing.wait_all_tasks_blocked()  # _close is waiting for the lock by now
            order.append("write")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        await TCPServer._close(conn)  # type: ignore[arg-type]
    assert order == ["write", "eof", "aclose"]


async def test_close_from_a_write_under_the_lock_does_not_deadlock() -> None:
    hypercorn_fix.install()
    order: list[str] = []
    conn = connection(order)
    async with conn.send_lock:  # Hypercorn: a broken stream found while writing
        with trio.fail_after(1):
            await TCPServer._close(conn)  # type: ignore[arg-type]
    assert order == ["eof", "aclose"]


async def test_a_write_that_never_finishes_delays_the_close_only_so_long(autojump_clock: trio.abc.Clock) -> None:
    hypercorn_fix.install()
    order: list[str] = []
    conn = connection(order)
    stuck = trio.Event()
    async with trio.open_nursery() as nursery:
        async def writer() -> None:
            async with conn.send_lock:
                await stuck.wait()  # a peer that never reads

        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await TCPServer._close(conn)  # type: ignore[arg-type]
        waited = trio.current_time() - start
        stuck.set()
    assert order == ["eof", "aclose"] and waited == hypercorn_fix.CLOSE_LOCK_WAIT_S
