"""systemd integration: readiness, status and watchdog over ``NOTIFY_SOCKET``; an event-loop lag probe.

Why the documented socket protocol rather than a library: it is one
``AF_UNIX`` datagram of ``KEY=value`` lines per message (sd_notify(3)), a
few lines of stdlib.  ``python-systemd`` needs libsystemd headers to build;
``sdnotify`` is unmaintained and knows no more than this module does.

What the server sends (``Type=notify`` in ``systemd/twibridge.service``):

* ``READY=1`` once the socket is listening (systemd then starts dependants,
  and ``systemctl start`` returns);
* ``STATUS=serving N calls`` / ``draining N calls``, whenever the count of
  live calls changes (``systemctl status`` shows it);
* ``RELOADING=1`` (with ``MONOTONIC_USEC``) when SIGHUP starts a config
  reload, then ``READY=1`` again once it is applied or refused
  (:mod:`twibridge.server.reload`), so ``Type=notify-reload`` units work;
* ``STOPPING=1`` when the drain starts, with ``EXTEND_TIMEOUT_USEC`` covering
  the whole bounded drain, so a ``TimeoutStopSec`` shorter than
  ``[server] drain_timeout_s`` cannot cut live calls off;
* ``WATCHDOG=1`` every half ``WATCHDOG_USEC``, **from the Trio loop**: a
  wedged loop (a blocking call, a CPU-bound bug) stops the pings, systemd
  kills the process after ``WatchdogSec`` and ``Restart=on-failure`` brings
  it back.  Only when ``WATCHDOG_USEC`` is set and ``WATCHDOG_PID`` is unset
  or this process (sd_watchdog_enabled(3)).

Outside systemd (no ``NOTIFY_SOCKET``) every send is a no-op.  Sends never
block and never raise: a lost datagram costs one ping, never the server.

The lag probe sleeps ``LAG_PROBE_PERIOD_S`` and records how late it woke in
``twibridge_event_loop_lag_seconds``: the same loop serves every call, so lag
there is late audio for all of them.  It runs with or without systemd.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Mapping

import trio

from twibridge.logs import get_logger

if TYPE_CHECKING:
    from twibridge.runtime import Runtime

log = get_logger("twibridge.systemd")

#: How often the lag probe wakes (seconds); 2 samples a second cost nothing.
LAG_PROBE_PERIOD_S = 0.5
#: Lag worth a warning: every call's audio is this late (logged at most once a minute).
LAG_WARN_S = 0.25
LAG_WARN_EVERY_S = 60.0
#: The status is re-checked at least this often (and on every change of the live calls).
STATUS_REFRESH_S = 5.0
#: Slack added to the drain bound in EXTEND_TIMEOUT_USEC.
STOP_SLACK_S = 5.0


class Notifier:
    """sd_notify(3) for one process: a datagram socket to ``NOTIFY_SOCKET``, or nothing.

    Args:
        address: ``NOTIFY_SOCKET``'s value: a filesystem path, or ``@name``
            for the abstract namespace.  None or empty: every send is a no-op.
    """

    def __init__(self, address: str | None) -> None:
        self.address: bytes | None = None
        self._sock: socket.socket | None = None
        self._last_status: str | None = None
        self._warned = False
        if not address:
            return
        if address[0] == "@":
            self.address = b"\0" + os.fsencode(address[1:])
        elif address[0] == "/":
            self.address = os.fsencode(address)
        else:  # e.g. systemd >= 254's "vsock:CID:PORT", for VMs: not needed on one host
            log.warning("systemd.unsupported_notify_socket", notify_socket=address[:80])
            return
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; False when not sent (never raises)."""
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto("\n".join(assignments).encode(), self.address)
        except OSError as exc:  # gone, full (EAGAIN) or refused: the next message may pass
            if not self._warned:
                self._warned = True
                log.warning("systemd.notify_failed", error=exc.__class__.__name__, detail=str(exc)[:120],
                            message="systemd notification lost (logged once)")
            return False
        return True

    def ready(self, status: str) -> bool:
        self._last_status = status
        return self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (``Type=notify-reload`` needs both); ``READY=1`` follows."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the config")

    def status(self, text: str) -> bool:
        """``STATUS=text`` unless it is what systemd already shows."""
        if text == self._last_status:
            return False
        self._last_status = text
        return self.send(f"STATUS={text}")

    def stopping(self, status: str, extend_s: float) -> bool:
        self._last_status = status
        return self.send("STOPPING=1", f"STATUS={status}", f"EXTEND_TIMEOUT_USEC={int(extend_s * 1_000_000)}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_period(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half ``WATCHDOG_USEC``), or None
    when systemd asks no watchdog of this process."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None  # meant for another process (e.g. our parent); sd_watchdog_enabled(3)
    return int(usec) / 2_000_000


def status_text(rt: Runtime) -> str:
    n = len(rt.calls)
    return f"{'draining' if rt.stopping.is_set() else 'serving'} {n} call{'' if n == 1 else 's'}"


def stop_timeout_s(rt: Runtime) -> float:
    """The longest a drain can take (see :func:`twibridge.server.app.drain`), plus slack."""
    cfg = rt.config
    return cfg.server.drain_timeout_s + cfg.calls.teardown_timeout_s + 1 + STOP_SLACK_S


async def watch(rt: Runtime, notifier: Notifier, *, watchdog_s: float | None = None,
                lag_period_s: float | None = None,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Status updates, watchdog pings and the lag probe, until cancelled.

    Runs in the server's nursery (the same Trio loop as every call: that is
    the point of the watchdog).  ``watchdog_s`` None: no pings.  Started
    (``nursery.start``) once all its tasks exist, so a caller counting tasks
    sees a stable baseline.
    """
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_lag_probe, rt, LAG_PROBE_PERIOD_S if lag_period_s is None else lag_period_s)
        if notifier.enabled:
            nursery.start_soon(_status, rt, notifier)
            if watchdog_s is not None:
                nursery.start_soon(_watchdog, notifier, watchdog_s)
        task_status.started()


async def _watchdog(notifier: Notifier, period: float) -> None:
    while True:
        notifier.watchdog()
        await trio.sleep(period)


async def _status(rt: Runtime, notifier: Notifier) -> None:
    while True:
        changed = rt.calls_changed  # taken before reading the count: no change is missed
        notifier.status(status_text(rt))
        with trio.move_on_after(STATUS_REFRESH_S):
            await changed.wait()


async def _lag_probe(rt: Runtime, period: float) -> None:
    warned_at = -LAG_WARN_EVERY_S
    while True:
        t0 = trio.current_time()
        await trio.sleep(period)
        now = trio.current_time()
        lag = max(0.0, now - t0 - period)
        if rt.metrics is not None:
            rt.metrics.observe_loop_lag(lag)
        if lag >= LAG_WARN_S and now - warned_at >= LAG_WARN_EVERY_S:
            warned_at = now
            log.warning("server.loop_lag", lag_s=round(lag, 3), calls=len(rt.calls),
                        message="the event loop is late: every call's audio is delayed (CPU saturated, "
                        "or something blocks the loop)")
