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

Children are fresh interpreters (``python -m twibridge.server.workers --child``),
never forks of a process with threads; they get the parent's validated
config as JSON on stdin (secrets included: a pipe, not argv or env), so
every child runs exactly the config the parent checked.  Each child runs the
normal app, runtime and drain of :mod:`twibridge.server.app`.

Reload (SIGHUP): the parent validates once and forwards over stdin (:mod:`twibridge.server.reload`).

Signals: the parent forwards SIGTERM (for SIGTERM or SIGINT) to each child
once; each drains its calls like a single ``serve`` and exits 0.  Children
ignore repeats (systemd's default ``KillMode=control-group`` signals every
process too).  The parent exits 0 when every child did.

Liveness: each child writes a heartbeat byte to a pipe from its Trio loop
every second (the first says "listening").  The parent SIGKILLs a child
silent for ``child_timeout_s`` (a wedged loop serves no call) and a child
whose pipe breaks drains by itself (the parent is gone).  A child that dies
is restarted (backoff 1 s doubling to 30 s); three deaths within 10 s of
starting in a row (a crash loop) stop everything with exit 1, so systemd's
``Restart=`` takes over.

systemd: the parent speaks sd_notify for the whole group (``Type=notify``
works unchanged): ``READY=1`` once every child listens, ``STATUS`` with the
workers ready, ``WATCHDOG=1`` from its loop (children are watched through
their heartbeats instead), ``STOPPING=1`` with a timeout covering the drain.
Children get no ``NOTIFY_SOCKET`` (``NotifyAccess=main`` would refuse them).

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
from twibridge.server import reload, systemd
from twibridge.server.reload import config_payload
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
#: A child's heartbeat period, and the silence after which the parent kills it.
HEARTBEAT_S, CHILD_TIMEOUT_S = 1.0, 15.0
#: A child must report "listening" within this long of starting.
CHILD_START_LIMIT_S = 60.0
#: Environment a child must not inherit: only the parent talks to systemd.
PARENT_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


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


def run_workers(config: Config, config_path: Path | None, n: int, host: str | None = None,
                port: int | None = None, *, child_timeout_s: float = CHILD_TIMEOUT_S) -> int:
    """Serve with ``n`` processes until SIGTERM/SIGINT; return the exit code.

    Blocking (runs its own ``trio.run``); usable from a script or a bench.
    ``config_path`` is only reported in logs: children get ``config`` itself.

    Raises:
        OSError: the address cannot be bound.
    """
    host = host or config.server.host
    sock = bind_listener(host, config.server.port if port is None else port)
    try:
        return trio.run(_Supervisor(config, config_path, n, sock, child_timeout_s).run)
    finally:
        sock.close()


@dataclass
class _Slot:
    index: int
    proc: trio.Process | None = None
    fast_failures: int = 0
    returncode: int | None = None
    ready: bool = False
    last_beat: float = 0.0


class _Supervisor:
    def __init__(self, config: Config, config_path: Path | None, n: int, sock: socket.socket,
                 child_timeout_s: float) -> None:
        self.config = config
        self.config_path = config_path
        self.sock = sock
        self.child_timeout_s = child_timeout_s
        self.slots = [_Slot(i) for i in range(n)]
        self.payload = config_payload(config) + b"\n"
        self.acks = reload.Acks()
        self.env = {k: v for k, v in os.environ.items() if k not in PARENT_ONLY_ENV}
        self.stopping = trio.Event()
        self.fatal = False
        self.notifier = systemd.Notifier.from_environ()
        self.announced = False
        name = sock.getsockname()
        self.url = f"http://[{name[0]}]:{name[1]}" if sock.family == socket.AF_INET6 else f"http://{name[0]}:{name[1]}"

    async def run(self) -> int:
        log.info("workers.listening", url=self.url, workers=len(self.slots), pid=os.getpid(),
                 config=str(self.config_path) if self.config_path else "built-in defaults")
        watchdog_s = systemd.watchdog_period()
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._signals)
                nursery.start_soon(self._monitor)
                if watchdog_s is not None:
                    nursery.start_soon(self._watchdog, watchdog_s)
                async with trio.open_nursery() as children:
                    for slot in self.slots:
                        children.start_soon(self._run_slot, slot)
                nursery.cancel_scope.cancel(reason="all workers exited")
        finally:
            self.notifier.close()
        codes = {s.index: s.returncode for s in self.slots}
        ok = not self.fatal and all(c == 0 for c in codes.values())
        log.info("workers.stopped", exit_codes=codes, ok=ok)
        return 0 if ok else 1

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP and not self.stopping.is_set():
                    live = [s.proc.stdin for s in self.slots if s.proc and s.proc.returncode is None and s.proc.stdin]
                    await reload.forward(self.config, self.config_path, self.notifier, live, self.acks, self._adopt)
                    continue
                if self.stopping.is_set():
                    log.info("workers.signal_repeated", signal=name)
                    continue
                log.info("workers.signal", signal=name, action="SIGTERM to every worker; each drains")
                self._stop_all()

    def _adopt(self, new: Config) -> None:
        """A reloaded config: what restarted workers get from now on."""
        self.config, self.payload = new, config_payload(new) + b"\n"

    def _stop_all(self) -> None:
        self.stopping.set()
        cfg = self.config
        live = sum(1 for s in self.slots if s.proc is not None and s.proc.returncode is None)
        self.notifier.stopping(f"draining {live} workers", cfg.server.drain_timeout_s
                               + cfg.calls.teardown_timeout_s + 10 + systemd.STOP_SLACK_S)
        for slot in self.slots:
            self._terminate(slot)

    @staticmethod
    def _terminate(slot: _Slot) -> None:
        if slot.proc is not None and slot.proc.returncode is None:
            try:
                slot.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _readiness_changed(self) -> None:
        ready = sum(s.ready for s in self.slots)
        status = f"{ready}/{len(self.slots)} workers ready"
        if not self.announced and ready == len(self.slots):
            self.announced = True
            self.notifier.ready(status)
            log.info("workers.ready", workers=ready, url=self.url)
        elif self.announced and not self.stopping.is_set():
            self.notifier.status(status)

    async def _watchdog(self, period: float) -> None:
        while True:
            self.notifier.watchdog()
            await trio.sleep(period)

    async def _monitor(self) -> None:
        """Kill a child whose loop stopped beating (it would hold calls it cannot serve)."""
        while True:
            await trio.sleep(min(0.5, self.child_timeout_s / 4))
            now = trio.current_time()
            for slot in self.slots:
                proc = slot.proc
                limit = self.child_timeout_s if slot.ready else max(CHILD_START_LIMIT_S, self.child_timeout_s)
                if proc is None or proc.returncode is not None or now - slot.last_beat <= limit:
                    continue
                log.error("workers.child_unresponsive", worker=slot.index, child_pid=proc.pid,
                          silent_s=round(now - slot.last_beat, 1), action="SIGKILL, then restart")
                slot.last_beat = float("inf")  # once
                proc.kill()

    async def _spawn(self, slot: _Slot) -> trio.Process:
        fd = self.sock.fileno()
        beat_r, beat_w = os.pipe()
        try:
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "twibridge.server.workers", "--child", "--fd", str(fd), "--index", str(slot.index),
                 "--heartbeat-fd", str(beat_w)],
                stdin=subprocess.PIPE, pass_fds=(fd, beat_w), start_new_session=True, env=self.env)
        except BaseException:
            os.close(beat_r)
            raise
        finally:
            os.close(beat_w)
        slot.ready, slot.last_beat = False, trio.current_time()
        self.nursery.start_soon(self._heartbeats, slot, proc, trio.lowlevel.FdStream(beat_r))
        assert proc.stdin is not None
        try:  # stdin stays open: reloads follow the first line
            await proc.stdin.send_all(self.payload)
        except trio.BrokenResourceError:
            pass  # it died at once; its exit code says why
        return proc

    async def _heartbeats(self, slot: _Slot, proc: trio.Process, beats: trio.lowlevel.FdStream) -> None:
        async with beats:
            while data := await beats.receive_some(256):
                if slot.proc is not proc:
                    return
                slot.last_beat = trio.current_time()
                self.acks.add(data.count(b"L"))
                if not slot.ready and b"R" in data:
                    slot.ready = True
                    self._readiness_changed()

    async def _run_slot(self, slot: _Slot) -> None:
        backoff = RESTART_BACKOFF_S
        while True:
            started = trio.current_time()
            slot.proc = await self._spawn(slot)
            log.info("workers.child_started", worker=slot.index, child_pid=slot.proc.pid)
            if self.stopping.is_set():
                self._terminate(slot)
            code = await self._wait(slot.proc)
            if slot.proc.stdin is not None:  # kept open for reloads until now
                await slot.proc.stdin.aclose()
            slot.returncode = code
            if slot.ready:
                slot.ready = False
                self._readiness_changed()
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


async def serve_fd(config: Config, fd: int, heartbeat_fd: int, stdin_rest: bytes = b"") -> None:
    """One worker: :func:`twibridge.server.app.serve` on the inherited socket ``fd``,
    reporting to the parent through ``heartbeat_fd`` instead of to systemd, and
    applying the reloads the parent forwards on stdin."""
    from twibridge.server.app import make_runtime, serve

    rt = make_runtime(config)
    acked, wake = 0, trio.Event()

    def acknowledge() -> None:
        nonlocal acked
        acked += 1
        wake.set()

    async def heartbeat(stop: trio.Event) -> None:
        # From the serving loop: a wedged loop stops beating and the parent kills it.
        nonlocal acked, wake
        async with trio.open_nursery() as nursery, trio.lowlevel.FdStream(heartbeat_fd) as beats:
            nursery.start_soon(reload.follow_parent, rt, trio.lowlevel.FdStream(os.dup(0)), stdin_rest, acknowledge)
            try:
                await beats.send_all(b"R")  # listening
                while True:
                    with trio.move_on_after(HEARTBEAT_S):
                        await wake.wait()
                    beat, acked, wake = b"L" * acked or b".", 0, trio.Event()  # L: a reload applied
                    await beats.send_all(beat)
            except trio.BrokenResourceError:
                log.warning("workers.parent_gone", action="draining")
                stop.set()
                nursery.cancel_scope.cancel(reason="parent gone")

    try:
        await serve(config, fd=fd, beside=heartbeat, rt=rt, reload_on_hangup=False)
    finally:
        with trio.move_on_after(config.state.timeout_s, shield=True):
            await rt.registry.aclose()


def _child(args: argparse.Namespace) -> int:
    import structlog

    from twibridge import logs

    first, rest = reload.read_first_line(0)
    config = build_config(json.loads(first))
    logs.configure(config.log.level, config.log.format, config.secrets())
    structlog.contextvars.bind_contextvars(worker=args.index, pid=os.getpid())
    from twibridge.server.heap import freeze_startup_heap

    freeze_startup_heap()
    trio.run(serve_fd, config, args.fd, args.heartbeat_fd, rest)
    log.info("server.stopped")
    return 0


def _parent(args: argparse.Namespace) -> int:
    """``python -m twibridge.server.workers --workers N``: what ``twibridge serve --workers N`` runs."""
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
        return run_workers(config, path, args.workers or config.server.workers, args.host, args.port,
                           child_timeout_s=args.child_timeout)
    except OSError as exc:
        print(f"cannot serve on {args.host or config.server.host}:{args.port}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m twibridge.server.workers")
    p.add_argument("--config", type=Path)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--child-timeout", type=float, default=CHILD_TIMEOUT_S,
                   help="Kill a worker whose loop is silent this long (seconds).")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--heartbeat-fd", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    return _child(args) if args.child else _parent(args)


if __name__ == "__main__":
    sys.exit(main())
