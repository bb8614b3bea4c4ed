"""``serve --workers N``: N server processes, each its own Trio loop, sharing one port.

One Trio process uses one core.  The parent binds the listening socket once
and every child inherits it (``pass_fds``; Hypercorn serves it as
``fd://N``), rather than each child binding its own ``SO_REUSEPORT`` socket,
because:

* one bind: port 0, IPv6 and bind errors behave exactly as for one process,
  reported once, before any child starts;
* a dying or restarting child drops nothing: connections wait in the one
  shared accept queue, where with ``SO_REUSEPORT`` those hashed to the dead
  child's own queue are reset;
* whichever loop is free accepts next, so a busy child takes fewer new calls.

Children are fresh interpreters (``python -m twibridge.workers --child``),
never forks of a process with threads; they get the parent's validated
config as JSON on stdin (secrets included: a pipe, not argv or env), so
every child runs exactly the config the parent checked.  Each child runs the
normal app, runtime and drain of :mod:`twibridge.server`.

Signals: the parent forwards SIGTERM (for SIGTERM or SIGINT) to each child
once; each drains its calls like a single ``serve`` and exits 0.  Children
ignore repeats (systemd's default ``KillMode=control-group`` signals every
process too) and drain by themselves if the parent dies.  The parent exits 0
when every child did.  A child that dies while serving is restarted (backoff
1 s doubling to 30 s); three deaths within 10 s of starting in a row (a crash
loop) stop everything with exit 1, so systemd's ``Restart=`` takes over.

What is shared: the port, and with ``[state] backend = "redis"`` the call
registry (duplicates, ``max_calls``, history).  With the memory backend each
process has its own registry: ``max_calls`` and duplicate detection are per
process and history is per process (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from pydantic import SecretStr

from twibridge.config import Config, build_config
from twibridge.logs import get_logger

log = get_logger("twibridge.workers")

#: Listen backlog of the shared socket (Hypercorn re-listens with its own value).
BACKLOG = 1024
#: Restart back-off for a child that died while serving.
RESTART_BACKOFF_S, RESTART_BACKOFF_MAX_S = 1.0, 30.0
#: A child dying this soon after starting counts as a failed start …
FAST_FAILURE_S = 10.0
#: … and this many in a row in one slot is a crash loop: stop, exit 1.
MAX_FAST_FAILURES = 3
#: A child checks this often whether its parent is gone.
PARENT_POLL_S = 1.0


def bind_listener(host: str, port: int) -> socket.socket:
    """The shared listening socket (inheritable, so children can serve it)."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = info[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(addr)
        sock.listen(BACKLOG)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def config_payload(config: Config) -> bytes:
    """The config as JSON with secrets revealed (only ever written to a child's stdin)."""

    def plain(v: Any) -> Any:
        if isinstance(v, SecretStr):
            return v.get_secret_value()
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return json.dumps(plain(config.model_dump())).encode()


def run_workers(config: Config, config_path: Path | None, n: int, host: str | None = None,
                port: int | None = None) -> int:
    """Serve with ``n`` processes until SIGTERM/SIGINT; return the exit code.

    Blocking (runs its own ``trio.run``); usable from a script or a bench.
    ``config_path`` is only reported in logs: children get ``config`` itself.

    Raises:
        OSError: the address cannot be bound.
    """
    host = host or config.server.host
    sock = bind_listener(host, config.server.port if port is None else port)
    try:
        return trio.run(_Supervisor(config, config_path, n, sock).run)
    finally:
        sock.close()


@dataclass
class _Slot:
    index: int
    proc: trio.Process | None = None
    fast_failures: int = 0
    returncode: int | None = None


class _Supervisor:
    def __init__(self, config: Config, config_path: Path | None, n: int, sock: socket.socket) -> None:
        self.config = config
        self.config_path = config_path
        self.sock = sock
        self.slots = [_Slot(i) for i in range(n)]
        self.payload = config_payload(config)
        self.stopping = trio.Event()
        self.fatal = False
        name = sock.getsockname()
        self.url = f"http://[{name[0]}]:{name[1]}" if sock.family == socket.AF_INET6 else f"http://{name[0]}:{name[1]}"

    async def run(self) -> int:
        log.info("workers.listening", url=self.url, workers=len(self.slots), pid=os.getpid(),
                 config=str(self.config_path) if self.config_path else "built-in defaults")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._signals)
            async with trio.open_nursery() as children:
                for slot in self.slots:
                    children.start_soon(self._run_slot, slot)
            nursery.cancel_scope.cancel(reason="all workers exited")
        codes = {s.index: s.returncode for s in self.slots}
        ok = not self.fatal and all(c == 0 for c in codes.values())
        log.info("workers.stopped", exit_codes=codes, ok=ok)
        return 0 if ok else 1

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.stopping.is_set():
                    log.info("workers.signal_repeated", signal=name)
                    continue
                log.info("workers.signal", signal=name, action="SIGTERM to every worker; each drains")
                self._stop_all()

    def _stop_all(self) -> None:
        self.stopping.set()
        for slot in self.slots:
            self._terminate(slot)

    @staticmethod
    def _terminate(slot: _Slot) -> None:
        if slot.proc is not None and slot.proc.returncode is None:
            try:
                slot.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    async def _spawn(self, slot: _Slot) -> trio.Process:
        fd = self.sock.fileno()
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "twibridge.workers", "--child", "--fd", str(fd), "--index", str(slot.index),
             "--parent", str(os.getpid())],
            stdin=subprocess.PIPE, pass_fds=(fd,), start_new_session=True)
        assert proc.stdin is not None
        try:
            await proc.stdin.send_all(self.payload)
        except trio.BrokenResourceError:
            pass  # it died at once; its exit code says why
        await proc.stdin.aclose()
        return proc

    async def _run_slot(self, slot: _Slot) -> None:
        backoff = RESTART_BACKOFF_S
        while True:
            started = trio.current_time()
            slot.proc = await self._spawn(slot)
            log.info("workers.child_started", worker=slot.index, child_pid=slot.proc.pid)
            if self.stopping.is_set():
                self._terminate(slot)
            code = await self._wait(slot.proc)
            slot.returncode = code
            if self.stopping.is_set():
                log.info("workers.child_exited", worker=slot.index, child_pid=slot.proc.pid, code=code)
                return
            uptime = trio.current_time() - started
            slot.fast_failures = slot.fast_failures + 1 if uptime < FAST_FAILURE_S else 0
            if uptime >= 60:
                backoff = RESTART_BACKOFF_S
            log.warning("workers.child_died", worker=slot.index, child_pid=slot.proc.pid, code=code,
                        uptime_s=round(uptime, 1), restart_in_s=backoff)
            if slot.fast_failures >= MAX_FAST_FAILURES:
                log.error("workers.crash_loop", worker=slot.index, failures=slot.fast_failures,
                          message="a worker keeps dying at start; stopping every worker")
                self.fatal = True
                self._stop_all()
                return
            with trio.move_on_after(backoff):
                await self.stopping.wait()
            if self.stopping.is_set():
                return
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX_S)

    async def _wait(self, proc: trio.Process) -> int:
        """The child's exit code; after shutdown starts, bounded by its drain time."""
        async with trio.open_nursery() as nursery:
            async def bound() -> None:
                await self.stopping.wait()
                cfg = self.config
                with trio.move_on_after(cfg.server.drain_timeout_s + cfg.calls.teardown_timeout_s + 10):
                    await trio.sleep_forever()
                log.error("workers.child_stuck", child_pid=proc.pid, action="SIGKILL")
                proc.kill()

            nursery.start_soon(bound)
            code = await proc.wait()
            nursery.cancel_scope.cancel()
        return code


# ---------------------------------------------------------------- the child


async def serve_fd(config: Config, fd: int, index: int, parent_pid: int) -> None:
    """One worker: the normal app and drain, on the inherited socket ``fd``."""
    from hypercorn.trio import serve as hypercorn_serve

    from twibridge.server import create_app, drain, hypercorn_config, make_runtime

    rt = make_runtime(config)
    if hasattr(rt.registry, "metrics"):
        rt.registry.metrics = rt.metrics  # Redis outages show in /metrics
    hc = hypercorn_config(config, "127.0.0.1", 0)
    hc.bind = [f"fd://{fd}"]
    stop = trio.Event()

    async def signals() -> None:
        # Open for the whole life of the worker: a repeated signal (the parent
        # forwarding what systemd also sent us) must not kill a draining worker.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
            async for signum in received:
                log.info("server.signal", signal=signal.Signals(signum).name, repeated=stop.is_set())
                stop.set()

    async def parent_watch() -> None:
        while os.getppid() == parent_pid:
            await trio.sleep(PARENT_POLL_S)
        log.warning("workers.parent_gone", action="draining")
        stop.set()

    async def trigger() -> None:
        await stop.wait()
        await drain(rt)

    async def run_server(task_status: trio.TaskStatus[list[str]]) -> None:
        await hypercorn_serve(create_app(rt), hc, shutdown_trigger=trigger, task_status=task_status)
        nursery.cancel_scope.cancel(reason="drained")

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(signals)
            nursery.start_soon(parent_watch)
            binds = await nursery.start(run_server)
            log.info("server.listening", url=binds[0], provider=config.agent.provider,
                     max_calls=config.server.max_calls)
    finally:
        with trio.move_on_after(config.state.timeout_s, shield=True):
            await rt.registry.aclose()


def _child(args: argparse.Namespace) -> int:
    import structlog

    from twibridge import logs

    config = build_config(json.loads(sys.stdin.buffer.read()))
    logs.configure(config.log.level, config.log.format, config.secrets())
    structlog.contextvars.bind_contextvars(worker=args.index, pid=os.getpid())
    trio.run(serve_fd, config, args.fd, args.index, args.parent)
    log.info("server.stopped")
    return 0


def _parent(args: argparse.Namespace) -> int:
    """``python -m twibridge.workers --workers N``: what ``twibridge serve --workers N`` runs."""
    from twibridge import logs
    from twibridge.config import ConfigError, default_config_path, load_config

    path = args.config if args.config is not None else default_config_path()
    try:
        config = load_config(path)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    logs.configure(config.log.level, config.log.format, config.secrets())
    try:
        return run_workers(config, path, args.workers or config.server.workers, args.host, args.port)
    except OSError as exc:
        print(f"cannot serve on {args.host or config.server.host}:{args.port}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m twibridge.workers")
    p.add_argument("--config", type=Path)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--parent", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    return _child(args) if args.child else _parent(args)


if __name__ == "__main__":
    sys.exit(main())
