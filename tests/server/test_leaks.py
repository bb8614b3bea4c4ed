"""Hundreds of calls ending every way a call can end, then nothing may be left behind.

Kinds (each a fresh CallSid, through the real server over real sockets):
normal end (``stop``), the caller dropping the TCP connection with no close
frame (RST, or a bare FIN), the agent's code crashing, the agent going away
for good, and a caller that goes quiet (idle timeout).  Afterwards the Trio
task count, this process's open fds, ``rt.calls``, ``rt.pending`` and the
call registry must all be back to their baseline, and every call must have
logged exactly one ``call.ended`` with the outcome its kind implies.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
import trio

from faulty_agents import ModalProvider
from rawws import TrioClient
from support import ACCOUNT_SID, bridge, make_config, sid, stream_params, tone
from twibridge.runtime import Runtime
from twibridge.server.app import make_runtime
from twibridge.twilio import emulation as emu

#: kind → (agent mode, close code the caller must see (None: it hung up itself), outcome logged)
KINDS: dict[str, tuple[str, int | None, str]] = {
    "normal": ("echo", 1000, "completed"),
    "drop-rst": ("echo", None, "caller-dropped"),
    "drop-fin": ("echo", None, "caller-dropped"),
    "agent-crash": ("crash", 1011, "error"),
    "agent-gone": ("drop", 1000, "agent-failed"),
    "idle": ("echo", 1000, "idle-timeout"),
}
FRAMES = [tone(200, 440)[i:i + 160] for i in range(0, 1600, 160)]
long_variant = pytest.mark.skipif("'slow' not in config.getoption('markexpr')",
                                  reason="long variant: run with -m slow")


def task_count() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    return walk(trio.lowlevel.current_root_task())


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def one_call(url: str, n: int, kind: str) -> int | None:
    """Run one call of ``kind``; the close code the server sent (None when we dropped)."""
    mode = KINDS[kind][0]
    stream_sid = sid("MZ", n)
    client = await TrioClient.connect(url)
    try:
        await client.text(emu.build_connected())
        await client.text(emu.build_start(1, stream_sid, ACCOUNT_SID, sid("CA", n), stream_params(sid("CA", n), {"mode": mode})))
        if kind != "idle":
            for i, frame in enumerate(FRAMES):
                await client.text(emu.build_inbound_media(i + 2, stream_sid, i + 1, i * 20, frame))
        if kind == "normal":
            await client.text(emu.build_stop(len(FRAMES) + 2, stream_sid, ACCOUNT_SID, sid("CA", n)))
        if kind.startswith("drop"):
            await client.abort(reset=kind == "drop-rst")
            return None
        return (await client.read_until_closed()).server_code
    finally:
        await client.aclose()


async def settle(rt: Runtime, tasks: int, fds: int) -> dict[str, Any]:
    """Wait (bounded) until the server is back to the baseline; what is left if it never is."""
    with trio.move_on_after(10):
        while rt.calls or rt.pending or task_count() > tasks or fd_count() > fds:
            await trio.sleep(0.02)  # no event for "a socket was closed": poll, bounded
    return {"calls": len(rt.calls), "pending": rt.pending, "registry": await rt.registry.count(),
            "live": len(await rt.registry.live()), "tasks": task_count() - tasks, "fds": fd_count() - fds}


async def run_leak_check(sequential_rounds: int, concurrent: int, batches: int, captured_logs: Any,
                         idle_s: float = 0.5) -> None:
    """``idle_s`` must outlast the loop's worst stall between a call's last frame and its ``stop``
    (hundreds of calls starting at once on 2 cores), or normal calls end as idle too."""
    cfg = make_config(calls={"idle_timeout_s": idle_s},
                      agent={"reconnect_attempts": 1, "reconnect_backoff_s": 0.01, "reconnect_backoff_max_s": 0.02})
    rt = make_runtime(cfg)
    provider = ModalProvider(cfg)
    rt.provider_factory = lambda c: provider
    codes: dict[int, tuple[str, int | None]] = {}
    n = 0

    async def run(kind: str) -> None:
        nonlocal n
        n += 1
        me = n
        with trio.fail_after(15):
            codes[me] = (kind, await one_call(url, me, kind))

    async with bridge(cfg, rt) as (url, _):
        tasks, fds = task_count(), fd_count()
        for kind in KINDS:  # warm-up: lazy imports and first-use allocations must not count
            await run(kind)
        warm = await settle(rt, tasks, fds)
        tasks, fds = task_count(), fd_count()
        assert warm["calls"] == warm["pending"] == warm["registry"] == 0
        for _ in range(sequential_rounds):
            for kind in KINDS:
                await run(kind)
        for _ in range(batches):
            async with trio.open_nursery() as nursery:
                for i in range(concurrent):
                    for kind in KINDS:
                        nursery.start_soon(run, kind)
        left = await settle(rt, tasks, fds)
        scraped = {k: rt.metrics.calls.labels(outcome=k)._value.get()  # type: ignore[union-attr]
                   for k in ("completed", "caller_hung_up", "error", "agent_failed", "idle_timeout")}

    assert left == {"calls": 0, "pending": 0, "registry": 0, "live": 0, "tasks": 0, "fds": 0}
    wrong = {me: (kind, code) for me, (kind, code) in codes.items() if code != KINDS[kind][1]}
    assert not wrong, wrong
    ended = captured_logs.events("call.ended")
    assert len(ended) == len(codes) == len(captured_logs.events("call.started"))
    by_sid = {e["call_sid"]: e["outcome"] for e in ended}
    assert len(by_sid) == len(codes)  # exactly one summary per call
    mismatched = {me: (kind, by_sid.get(sid("CA", me))) for me, (kind, _) in codes.items()
                  if by_sid.get(sid("CA", me)) != KINDS[kind][2]}
    assert not mismatched, mismatched
    per_kind = Counter(kind for kind, _ in codes.values())
    assert len(captured_logs.events("call.internal_error")) == per_kind["agent-crash"]
    assert scraped == {"completed": per_kind["normal"], "caller_hung_up": per_kind["drop-rst"] + per_kind["drop-fin"],
                       "error": per_kind["agent-crash"], "agent_failed": per_kind["agent-gone"],
                       "idle_timeout": per_kind["idle"]}


async def test_hundred_calls_leave_nothing_behind(captured_logs) -> None:
    """~100 calls: 3 sequential rounds of every kind, then 14 of each kind at once."""
    with trio.fail_after(60):
        await run_leak_check(sequential_rounds=3, concurrent=14, batches=1, captured_logs=captured_logs)


@pytest.mark.slow
@long_variant
async def test_many_hundred_calls_leave_nothing_behind(captured_logs) -> None:
    """~850 calls: 20 sequential rounds, then 4 batches of 30 of each kind at once."""
    with trio.fail_after(600):
        await run_leak_check(sequential_rounds=20, concurrent=30, batches=4, captured_logs=captured_logs, idle_s=2.0)
