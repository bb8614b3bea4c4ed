"""``twibridge serve`` for the soak: the production app, plus a sample of its own health every few seconds.

``python -m bench.soak_server --sample-s 5`` runs :func:`twibridge.server.app.serve`
exactly as ``twibridge serve`` does (config from ``TWIBRIDGE_*``), with one
task beside it that logs ``soak.sample``: resident memory and open fds (from
``/proc/self``), the number of live Trio tasks (walked from the root task) and
live calls, and its CPU time so far.  The task count is what only the process itself can see; a leaked
task, cancel scope or nursery shows there before it shows in memory.

``kill -USR1 <pid>`` logs ``soak.tasks``: the live tasks grouped by where each
waits (its coroutine chain, outermost first, with line numbers), counted, most
common first; ``soak.fds``: the open fds by kind (socket, pipe, file); and
``soak.ws_streams``: Hypercorn's live WebSocket streams by state and how full
each one's app queue is.  That is what says which code path holds a leftover.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import os
import signal
import sys
import time
from collections import Counter, deque
from functools import partial
from typing import Any, Iterator

import trio


def task_count() -> int:
    """Every live task of this Trio run (the root's whole tree)."""
    return len(all_tasks())


def all_tasks() -> list[trio.lowlevel.Task]:
    root = trio.lowlevel.current_root_task()
    assert root is not None  # called from inside trio.run
    todo, out = [root], []
    while todo:
        task = todo.pop()
        out.append(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return out


def _frames(coro: Any) -> Iterator[tuple[Any, int]]:
    """The frames of a coroutine chain, outermost first, through ``__await__`` wrappers too
    (Hypercorn's ``TCPServer`` is awaited as an object: Trio's own walk stops there)."""
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            yield frame, frame.f_lineno
            coro = getattr(coro, "cr_await", None) if hasattr(coro, "cr_frame") else getattr(coro, "gi_yieldfrom", None)
        elif type(coro).__name__ == "coroutine_wrapper":
            coro = next((r for r in gc.get_referents(coro) if inspect.iscoroutine(r)), None)
        else:
            return


def where(task: trio.lowlevel.Task) -> str:
    """The task's await chain, outermost first: ``module:function:line > …``."""
    parts = []
    for frame, lineno in _frames(task.coro):
        mod = frame.f_globals.get("__name__", "?")
        if mod.startswith("trio._core"):
            continue  # the same few scheduler frames under every chain
        parts.append(f"{mod}:{frame.f_code.co_qualname}:{lineno}")
    return " > ".join(parts) or f"{task.name} (not started)"


def task_groups(limit: int = 40) -> list[tuple[int, str]]:
    """Live tasks grouped by where they wait, most common first."""
    counts = Counter(where(t) for t in all_tasks())
    return [(n, chain) for chain, n in counts.most_common(limit)]


def fd_kinds() -> dict[str, int]:
    kinds: Counter[str] = Counter()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        kinds[target.split(":", 1)[0] if ":" in target else "file"] += 1
    return dict(kinds)


def ws_streams() -> dict[str, int]:
    """Hypercorn's live WebSocket streams, counted by state and the app channel's fill (``used/max``).

    After a full collection: a closed connection's stream sits in reference cycles until the cyclic
    collector runs, which is no leak."""
    from hypercorn.protocol.ws_stream import WSStream

    gc.collect()
    kinds: Counter[str] = Counter()
    for obj in gc.get_objects():
        if isinstance(obj, WSStream):
            put = getattr(obj.app_put, "__wrapped__", obj.app_put)  # hypercorn_fix's app_queue guard
            chan = getattr(put, "__self__", None)
            stats = chan.statistics() if chan is not None else None
            fill = f"{stats.current_buffer_used}/{stats.max_buffer_size} waiting={stats.tasks_waiting_send}" \
                if stats is not None else "no app"
            kinds[f"{obj.state.name} closed={obj.closed} {fill}"] += 1
    return dict(kinds)


def rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def retained(rt: Any) -> tuple[int, int]:
    """Call summaries the in-process registry keeps for ``twibridge calls``, and its bound: until it is
    full every call adds one by design (the soak's warm-up lasts until then); (0, 0) for Redis."""
    history = getattr(rt.registry, "_history", None)
    return (len(history), history.maxlen or 0) if history is not None else (0, 0)


async def sampler(rt: Any, every_s: float, _signalled: trio.Event) -> None:
    from twibridge.logs import get_logger

    log = get_logger("bench.soak")

    async def dump_on_usr1() -> None:
        with trio.open_signal_receiver(signal.SIGUSR1) as signals:
            async for _ in signals:
                groups = [{"n": n, "at": chain} for n, chain in task_groups()]
                log.info("soak.tasks", total=task_count(), groups=groups)
                log.info("soak.fds", total=open_fds(), kinds=fd_kinds())
                log.info("soak.ws_streams", streams=ws_streams())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(dump_on_usr1)
        while True:
            kept, bound = retained(rt)
            log.info("soak.sample", rss_kb=rss_kb(), fds=open_fds(), tasks=task_count(), calls=len(rt.calls),
                     pending=rt.pending, history=kept, history_max=bound, cpu_s=round(time.process_time(), 3),
                     mono=round(trio.current_time(), 3))
            await trio.sleep(every_s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak_server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--sample-s", type=float, default=5.0)
    p.add_argument("--history", type=int, default=0,
                   help="keep this many call summaries instead of the registry's 200 (0: as shipped); "
                        "a diagnostic: RSS grows until that history is full")
    args = p.parse_args(argv)

    from twibridge import logs
    from twibridge.config import load_config
    from twibridge.server.app import make_runtime, serve

    cfg = load_config(None, os.environ)
    logs.configure(cfg.log.level, cfg.log.format, cfg.secrets())
    rt = make_runtime(cfg)
    if args.history and hasattr(rt.registry, "_history"):
        rt.registry._history = deque(rt.registry._history, maxlen=args.history)
    from twibridge.server.heap import freeze_startup_heap

    freeze_startup_heap()  # as `twibridge serve` does
    trio.run(partial(serve, cfg, host=args.host, port=args.port, rt=rt,
                     beside=partial(sampler, rt, args.sample_s)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
