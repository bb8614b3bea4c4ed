"""``twibridge serve`` for the soak: the production app, plus a sample of its own health every few seconds.

``python -m bench.soak_server --sample-s 5`` runs :func:`twibridge.server.app.serve`
exactly as ``twibridge serve`` does (config from ``TWIBRIDGE_*``), with one
task beside it that logs ``soak.sample``: resident memory and open fds (from
``/proc/self``), the number of live Trio tasks (walked from the root task) and
live calls.  The task count is what only the process itself can see; a leaked
task, cancel scope or nursery shows there before it shows in memory.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from typing import Any

import trio


def task_count() -> int:
    """Every live task of this Trio run (the root's whole tree)."""
    todo = [trio.lowlevel.current_root_task()]
    n = 0
    while todo:
        task = todo.pop()
        n += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return n


def rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def sampler(rt: Any, every_s: float, _signalled: trio.Event) -> None:
    from twibridge.logs import get_logger

    log = get_logger("bench.soak")
    while True:
        log.info("soak.sample", rss_kb=rss_kb(), fds=open_fds(), tasks=task_count(), calls=len(rt.calls),
                 pending=rt.pending, mono=round(trio.current_time(), 3))
        await trio.sleep(every_s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak_server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--sample-s", type=float, default=5.0)
    args = p.parse_args(argv)

    from twibridge import logs
    from twibridge.config import load_config
    from twibridge.server.app import make_runtime, serve

    cfg = load_config(None, os.environ)
    logs.configure(cfg.log.level, cfg.log.format, cfg.secrets())
    rt = make_runtime(cfg)
    trio.run(partial(serve, cfg, host=args.host, port=args.port, rt=rt,
                     beside=partial(sampler, rt, args.sample_s)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
