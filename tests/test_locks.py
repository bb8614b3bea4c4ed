"""twibridge.locks: a free lock is taken in the same pass of the run loop; a held one in turn; a cancel first."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from passes import run_loop_passes
from twibridge import locks


async def test_a_free_lock_is_taken_without_a_pass_where_trios_acquire_takes_one() -> None:
    lock = trio.Lock()
    with run_loop_passes() as passes:
        before = passes.n
        await locks.acquire(lock)
        assert passes.n == before
        assert lock.statistics().owner is trio.lowlevel.current_task()
        lock.release()
        before = passes.n
        await lock.acquire()  # what this module exists to avoid
        assert passes.n == before + 1
        lock.release()


@pytest.mark.parametrize("make", [trio.Lock, locks.EagerLock])
async def test_a_held_lock_is_waited_for_in_turn(make: type) -> None:
    lock = make()
    order: list[str] = []

    async def taker(name: str) -> None:
        async with lock:
            order.append(name)
            await trio.lowlevel.checkpoint()

    await lock.acquire()  # held by the test
    async with trio.open_nursery() as nursery:
        for name in "abc":
            nursery.start_soon(taker, name)
            await trio.testing.wait_all_tasks_blocked()
        assert order == [] and lock.statistics().tasks_waiting == 3
        lock.release()
    assert order == ["a", "b", "c"]
    assert not lock.locked()


async def test_a_cancel_is_seen_before_the_lock_is_taken() -> None:
    lock = trio.Lock()
    with trio.CancelScope() as scope:
        scope.cancel()
        await locks.acquire(lock)
    assert scope.cancelled_caught
    assert not lock.locked()


async def test_eager_lock_is_a_lock_taken_without_a_pass() -> None:
    lock = locks.EagerLock()
    with run_loop_passes() as passes:
        before = passes.n
        async with lock:
            assert passes.n == before
            assert lock.locked() and lock.statistics().owner is trio.lowlevel.current_task()
    assert not lock.locked()
    await lock.acquire()
    lock.release()
    with trio.CancelScope() as scope:
        scope.cancel()
        await lock.acquire()
    assert scope.cancelled_caught and not lock.locked()
