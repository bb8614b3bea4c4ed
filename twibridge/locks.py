"""A free :class:`trio.Lock` taken without a trip through the scheduler.

``trio.Lock.acquire`` is a full checkpoint: even when the lock is free, the
task goes to the back of the run queue before it gets it.  On the media
path each such trip is one more pass of Trio's run loop that a message
waits out behind every other call's work, and under load a pass is
milliseconds: a reply's audio crossed four passes between the agent's
socket and Twilio's, two of them only to take a free lock or to sleep until
a time already past (issue #16, docs/benchmarks.md "Hops on the reply
path").  Where the lock guards a write that yields anyway, the free case can
skip the trip: a cancel is still seen first, and a held lock is waited for
in turn, as before.
"""

from __future__ import annotations

import trio


async def acquire(lock: trio.Lock) -> None:
    """``await lock.acquire()``, except that a free lock is taken at once (a cancel is still checked)."""
    await trio.lowlevel.checkpoint_if_cancelled()
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()  # held: wait in turn, fairly


class EagerLock:
    """A :class:`trio.Lock` (``async with``, :meth:`statistics`) whose free acquire does not yield.

    For a library's lock we cannot take with :func:`acquire` (Hypercorn's
    per-connection send lock, :mod:`twibridge.server.hypercorn_fix`): trio's
    ``Lock`` cannot be subclassed, so this wraps one.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def acquire(self) -> None:
        await acquire(self._lock)

    def acquire_nowait(self) -> None:
        self._lock.acquire_nowait()

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def statistics(self) -> trio.LockStatistics:
        return self._lock.statistics()

    async def __aenter__(self) -> None:
        await acquire(self._lock)

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
