"""What the event loop itself costs per message, Trio against asyncio: ``python -m bench.loopcost``.

Why: issue #16 asked whether the agent leg's extra CPU per call (against
Twilio's asyncio sample) is the task hops.  Per message a bridge pays, in
the loop alone: a yield to the scheduler, a hand-off to another task
(Trio memory channel / asyncio queue), and, in Hypercorn's read loop, a
timeout scope around every socket read (``trio.fail_after(read_timeout)``;
asyncio's transports read in a callback with no scope at all).  Same
interpreter, no sockets, best of three.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import trio

N = 100_000


async def trio_yield() -> float:
    t = time.perf_counter()
    for _ in range(N):
        await trio.sleep(0)
    return time.perf_counter() - t


async def trio_handoff() -> float:
    send, receive = trio.open_memory_channel[int](0)

    async def drain() -> None:
        async for _ in receive:
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        t = time.perf_counter()
        async with send:
            for i in range(N):
                await send.send(i)
        return time.perf_counter() - t


async def trio_read_scope() -> float:
    """The scope Hypercorn opens per read, over a bare checkpoint (its cost is the difference)."""
    t = time.perf_counter()
    for _ in range(N):
        with trio.fail_after(40):
            await trio.lowlevel.cancel_shielded_checkpoint()
    scoped = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(N):
        await trio.lowlevel.cancel_shielded_checkpoint()
    return scoped - (time.perf_counter() - t)


async def asyncio_yield() -> float:
    t = time.perf_counter()
    for _ in range(N):
        await asyncio.sleep(0)
    return time.perf_counter() - t


async def asyncio_handoff() -> float:
    queue: asyncio.Queue[int] = asyncio.Queue(1)

    async def drain() -> None:
        for _ in range(N):
            await queue.get()

    task = asyncio.create_task(drain())
    t = time.perf_counter()
    for i in range(N):
        await queue.put(i)
    await task
    return time.perf_counter() - t


def main() -> None:
    rows: list[tuple[str, Callable[[], float]]] = [
        ("yield to the scheduler: Trio `sleep(0)`", lambda: trio.run(trio_yield)),
        ("yield to the scheduler: asyncio `sleep(0)`", lambda: asyncio.run(asyncio_yield())),
        ("hand-off to another task: Trio memory channel (0)", lambda: trio.run(trio_handoff)),
        ("hand-off to another task: asyncio `Queue(1)`", lambda: asyncio.run(asyncio_handoff())),
        ("Hypercorn's `fail_after` around one read (Trio; asyncio has none)", lambda: trio.run(trio_read_scope)),
    ]
    print("| per message | µs |\n|---|---:|")
    for name, run in rows:
        print(f"| {name} | {min(run() for _ in range(3)) / N * 1e6:.2f} |")


if __name__ == "__main__":
    main()
