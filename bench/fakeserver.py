"""What the bench's lean fake agent servers share: their log line, their listener and their command line.

Each fake (:mod:`bench.fake_realtime`, :mod:`bench.fake_gemini`) is its own
process so that its CPU is measured apart from the bridge's; this runs one:
listen, serve each connection with the fake's ``handle(key, stream)``, log
``server.listening`` (the bench reads the URL from it) and, on SIGUSR1 and at
the end, the fake's ``fake.totals``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from functools import partial
from typing import Any, Awaitable, Callable

import trio

Handler = Callable[[str, trio.SocketStream], Awaitable[None]]


def log(event: str, **kw: object) -> None:
    sys.stderr.write(json.dumps({"event": event, **kw}) + "\n")
    sys.stderr.flush()


async def serve(handle: Handler, provider: str, totals: Callable[[], dict[str, Any]], host: str, port: int,
                key: str, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
                signals: bool = True) -> None:
    """Serve until SIGTERM/SIGINT (``signals=False``, in-process tests: until the caller's nursery is
    cancelled); ``task_status`` gets the port."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    port = listeners[0].socket.getsockname()[1]
    log("server.listening", url=f"http://{host}:{port}", provider=provider)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.serve_listeners, partial(handle, key), listeners))
        task_status.started(port)
        if not signals:
            return
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as received:
            async for signum in received:
                if signum != signal.SIGUSR1:
                    break
                log("fake.totals", **totals())
        log("fake.totals", **totals())
        nursery.cancel_scope.cancel()


def main(prog: str, run: Callable[[str, int, str], Awaitable[None]], argv: list[str] | None = None) -> int:
    """``python -m bench.fake_X [--host] [--port] --key KEY``."""
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--key", required=True)
    args = p.parse_args(argv)
    try:
        trio.run(run, args.host, args.port, args.key)
    except KeyboardInterrupt:
        pass
    return 0
