"""systemd notify/watchdog against a fake NOTIFY_SOCKET (a bound AF_UNIX datagram socket).

The in-process tests run the real server (``running_server``) with the
environment systemd would give it; the process test runs ``twibridge serve``
and SIGTERMs it, as ``systemctl stop`` would.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import trio

from process_support import ServerProcess, base_env
from support import Leg, bridge, make_config, media_socket
from twibridge.server import systemd
from twibridge.server.systemd import Notifier, watchdog_period


class FakeSystemd:
    """Collects sd_notify datagrams in a thread, with their arrival times (monotonic)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def all(self) -> list[dict[str, str]]:
        with self._lock:
            return [m for _, m in self.messages]

    def with_key(self, key: str) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return [(t, m) for t, m in self.messages if key in m]

    async def wait_for(self, key: str, value: str | None = None, count: int = 1, timeout: float = 10) -> None:
        """Poll (the datagrams arrive in another thread: no Trio event to wait on)."""
        with trio.fail_after(timeout):
            while len([m for _, m in self.with_key(key) if value is None or m[key] == value]) < count:
                await trio.sleep(0.01)


@pytest.fixture
def fake_systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(str(tmp_path / "notify"))
    yield fake
    fake.close()


# ------------------------------------------------------------------ pure parts


def test_no_notify_socket_is_a_no_op() -> None:
    n = Notifier.from_environ({})
    assert not n.enabled and n.ready("serving 0 calls") is False and n.watchdog() is False
    n.close()


def test_unsupported_address_is_disabled_and_logged(captured_logs) -> None:
    n = Notifier("vsock:2:1234")
    assert not n.enabled and n.send("READY=1") is False
    assert captured_logs.events("systemd.unsupported_notify_socket")


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),  # our pid below
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
])
def test_watchdog_period_is_half_of_watchdog_usec(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_period(env, pid=4242) == expected


@pytest.mark.parametrize("abstract", [False, True])
def test_datagram_format_path_and_abstract(tmp_path: Path, abstract: bool) -> None:
    address = f"@twibridge-test-{uuid.uuid4().hex}" if abstract else str(tmp_path / "notify")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind("\0" + address[1:] if abstract else address)
    rx.settimeout(2)
    n = Notifier.from_environ({"NOTIFY_SOCKET": address})
    try:
        assert n.enabled
        assert n.ready("serving 0 calls")
        assert rx.recv(4096) == b"READY=1\nSTATUS=serving 0 calls"
        assert n.status("serving 0 calls") is False  # unchanged: not re-sent
        assert n.status("serving 1 call")
        assert rx.recv(4096) == b"STATUS=serving 1 call"
        assert n.watchdog()
        assert rx.recv(4096) == b"WATCHDOG=1"
        assert n.stopping("draining 1 call", 38.5)
        assert rx.recv(4096) == b"STOPPING=1\nSTATUS=draining 1 call\nEXTEND_TIMEOUT_USEC=38500000"
    finally:
        n.close()
        rx.close()


def test_a_vanished_socket_never_raises_and_warns_once(tmp_path: Path, captured_logs) -> None:
    n = Notifier(str(tmp_path / "nobody-listens"))
    try:
        assert n.enabled
        assert n.watchdog() is False and n.watchdog() is False
    finally:
        n.close()
    assert len(captured_logs.events("systemd.notify_failed")) == 1


# ------------------------------------------------------------------ in-process server


async def healthz(url: str) -> dict:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(url + "/healthz")).json()


async def test_ready_status_watchdog_and_stopping(fake_systemd: FakeSystemd, monkeypatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", fake_systemd.address)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # pings every 50 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    with trio.fail_after(20):
        async with bridge(make_config(server={"drain_timeout_s": 0.2})) as (url, rt):
            await fake_systemd.wait_for("READY")
            assert fake_systemd.all()[0] == {"READY": "1", "STATUS": "serving 0 calls"}  # nothing before READY
            assert (await healthz(url))["status"] == "ok"  # READY means listening
            await fake_systemd.wait_for("WATCHDOG", count=4)
            for n in (11, 12):
                async with media_socket(url) as ws:
                    await Leg(ws, n).start()
                    await fake_systemd.wait_for("STATUS", "serving 1 call", count=n - 10)
                await fake_systemd.wait_for("STATUS", "serving 0 calls", count=n - 9)
            assert fake_systemd.with_key("STOPPING") == []
        # leaving the block drains, as SIGTERM would
        await fake_systemd.wait_for("STOPPING")  # read by the fake's thread: may lag a little
    statuses = [m["STATUS"] for m in fake_systemd.all() if "STATUS" in m]
    assert statuses == ["serving 0 calls", "serving 1 call", "serving 0 calls", "serving 1 call",
                        "serving 0 calls", "draining 0 calls"]
    [(_, stop)] = fake_systemd.with_key("STOPPING")
    assert stop["STATUS"] == "draining 0 calls"
    assert int(stop["EXTEND_TIMEOUT_USEC"]) == int(systemd.stop_timeout_s(rt) * 1_000_000)
    assert len(fake_systemd.with_key("READY")) == 1


async def test_no_watchdog_pings_for_another_pid(fake_systemd: FakeSystemd, monkeypatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", fake_systemd.address)
    monkeypatch.setenv("WATCHDOG_USEC", "40000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    with trio.fail_after(10):
        async with bridge() as _:
            await fake_systemd.wait_for("READY")
            await trio.sleep(0.2)  # ten watchdog periods: none may come
    assert fake_systemd.with_key("WATCHDOG") == []


async def test_a_wedged_loop_stops_the_pings_and_is_measured(fake_systemd: FakeSystemd, monkeypatch,
                                                               captured_logs) -> None:
    """The pings come from the Trio loop, not a thread: block the loop, they stop."""
    monkeypatch.setenv("NOTIFY_SOCKET", fake_systemd.address)
    monkeypatch.setenv("WATCHDOG_USEC", "40000")  # every 20 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setattr(systemd, "LAG_PROBE_PERIOD_S", 0.02)
    with trio.fail_after(10):
        async with bridge() as (url, rt):
            await fake_systemd.wait_for("WATCHDOG", count=3)
            t0 = time.monotonic()
            time.sleep(0.4)  # a blocking call wedges the loop
            t1 = time.monotonic()
            before = len(fake_systemd.with_key("WATCHDOG"))
            await fake_systemd.wait_for("WATCHDOG", count=before + 3)
            lag = rt.metrics.loop_lag.collect()[0].samples
    pings = [t for t, _ in fake_systemd.with_key("WATCHDOG")]
    assert not [t for t in pings if t0 + 0.05 < t < t1 - 0.01]  # silent while wedged
    assert any(t > t1 for t in pings)  # back once the loop runs
    buckets = {s.labels["le"]: s.value for s in lag if s.name.endswith("_bucket")}
    count = next(s.value for s in lag if s.name.endswith("_count"))
    assert count - buckets["0.25"] >= 1  # the wedge shows as one lag sample above 250 ms
    assert captured_logs.events("server.loop_lag")[0]["lag_s"] >= 0.25


# ------------------------------------------------------------------ the real process


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_serve_process_notifies_ready_watchdog_and_stopping(fake_systemd: FakeSystemd) -> None:
    env = base_env(NOTIFY_SOCKET=fake_systemd.address, WATCHDOG_USEC="200000",
                   TWIBRIDGE_SERVER_DRAIN_TIMEOUT_S="10")
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            sp = await ServerProcess(env).start(nursery)
            await fake_systemd.wait_for("READY")
            await fake_systemd.wait_for("WATCHDOG", count=2)
            async with media_socket(sp.url) as ws:
                leg = Leg(ws, 21)
                await leg.start()
                await fake_systemd.wait_for("STATUS", "serving 1 call")
                sp.signal(signal.SIGTERM)
                await fake_systemd.wait_for("STOPPING")
                sp.signal(signal.SIGTERM)  # a repeat (the whole control group signalled) is ignored
                await sp.wait_for(lambda line: line.get("repeated") is True)
                pings = len(fake_systemd.with_key("WATCHDOG"))
                await fake_systemd.wait_for("WATCHDOG", count=pings + 1)  # still pinging while draining
                await leg.stop()  # the live call ends by itself within the drain
                await fake_systemd.wait_for("STATUS", "draining 0 calls")
            assert await sp.proc.wait() == 0
    messages = fake_systemd.all()
    assert messages[0] == {"READY": "1", "STATUS": "serving 0 calls"}
    assert sp.events("server.listening")[0]["watchdog_s"] == 0.1
    stop = next(m for m in messages if "STOPPING" in m)
    assert stop["STATUS"] == "draining 1 call"
    assert int(stop["EXTEND_TIMEOUT_USEC"]) >= 10_000_000  # covers the whole drain
    assert [line.get("repeated") for line in sp.events("server.signal")] == [None, True]
    assert sp.events("call.ended")[0]["outcome"] == "completed"
