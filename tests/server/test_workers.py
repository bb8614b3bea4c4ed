"""``serve --workers N`` (``twibridge.server.workers``): processes share the port, restart, drain, exit 0."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket

from process_support import ServerProcess, base_env
from support import TOKEN, Leg, media_socket, sid
from test_systemd import FakeSystemd  # the fake NOTIFY_SOCKET (one helper, not a copy)
from twibridge.config import build_config
from twibridge.server.workers import bind_listener, config_payload

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and fd passing")


def workers_cmd(n: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "twibridge.server.workers", "--workers", str(n), "--host", "127.0.0.1", "--port", "0",
            *extra]


def is_event(name: str, **fields: Any) -> Any:
    return lambda line: line.get("event") == name and all(line.get(k) == v for k, v in fields.items())


async def hold_call(url: str, n: int, closed_with: dict[int, int], *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """One call kept open (reading) until the server closes it; records the close code."""
    async with media_socket(url) as ws:
        await Leg(ws, n).start()
        task_status.started()
        try:
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            closed_with[n] = exc.reason.code


async def test_two_workers_share_the_port_restart_and_drain(tmp_path: Path) -> None:
    fake = FakeSystemd(str(tmp_path / "notify"))
    env = base_env(TWIBRIDGE_SERVER_DRAIN_TIMEOUT_S="1", NOTIFY_SOCKET=fake.address, WATCHDOG_USEC="400000")
    sp = ServerProcess(env, workers_cmd(2, "--child-timeout", "2"))
    closed_with: dict[int, int] = {}
    try:
        with trio.fail_after(45):
            async with trio.open_nursery() as nursery:
                try:
                    await sp.start(nursery)
                    second = await sp.wait_for(is_event("server.listening"), count=2)
                    assert second["url"] == sp.url
                    listening = sp.events("server.listening")
                    assert len({line["pid"] for line in listening}) == 2
                    assert {line["worker"] for line in listening} == {0, 1}
                    # the parent speaks for the group: READY once both listen, then watchdog pings
                    await fake.wait_for("READY")
                    await fake.wait_for("WATCHDOG", count=2)

                    # calls land on both processes (one shared accept queue).  Which
                    # worker wins an accept is a race that an idle worker can win every
                    # time, so calls are offered in concurrent bursts, as real traffic
                    # arrives: while one worker handles a handshake the other accepts.
                    async with trio.open_nursery() as calls:
                        n = 0
                        while len({line["worker"] for line in sp.events("call.started")}) < 2:
                            assert n < 40, "every call went to one worker"
                            for _ in range(8):
                                n += 1
                                calls.start_soon(hold_call, sp.url, n, closed_with)
                            await sp.wait_for(is_event("call.started"), count=n)

                        # a wedged worker (SIGSTOP: its loop stops beating) is killed and
                        # restarted; only its own calls end
                        victim = sp.events("call.started")[0]
                        os.kill(victim["pid"], signal.SIGSTOP)
                        await sp.wait_for(is_event("workers.child_unresponsive", child_pid=victim["pid"]))
                        died = await sp.wait_for(is_event("workers.child_died", child_pid=victim["pid"]))
                        assert died["code"] == -signal.SIGKILL
                        back = await sp.wait_for(is_event("server.listening", worker=victim["worker"]), count=2)
                        assert back["pid"] != victim["pid"] and back["url"] == sp.url
                        await fake.wait_for("STATUS", "2/2 workers ready", count=2)
                        # a new call is served
                        await calls.start(hold_call, sp.url, 100, closed_with)
                        await sp.wait_for(is_event("call.started"), count=n + 1)

                        # SIGTERM: every worker drains (its live calls close 1001), all exit 0
                        sp.signal(signal.SIGTERM)
                        await fake.wait_for("STOPPING")
                        assert await sp.proc.wait() == 0  # type: ignore[union-attr]
                finally:
                    if sp.proc is not None and sp.proc.poll() is None:
                        sp.proc.kill()
                        await sp.proc.wait()
    finally:
        fake.close()
    stopped = sp.events("workers.stopped")
    assert stopped and stopped[0]["ok"] is True and set(stopped[0]["exit_codes"].values()) == {0}
    victim_calls = {line["call_sid"] for line in sp.events("call.started") if line["pid"] == victim["pid"]}
    survivors = {n: code for n, code in closed_with.items() if sid("CA", n) not in victim_calls}
    assert survivors and set(survivors.values()) == {1001}
    assert len(sp.events("server.draining")) == 2
    assert [m for m in fake.all() if "READY" in m] == [{"READY": "1", "STATUS": "2/2 workers ready"}]
    assert TOKEN not in json.dumps(sp.lines)


async def test_twibridge_serve_workers_option() -> None:
    """The real CLI path: ``twibridge serve --workers 2`` serves a call and stops cleanly."""
    args = [sys.executable, "-m", "twibridge", "serve", "--workers", "2", "--host", "127.0.0.1", "--port", "0"]
    sp = ServerProcess(base_env(TWIBRIDGE_SERVER_DRAIN_TIMEOUT_S="1"), args)
    closed_with: dict[int, int] = {}
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            try:
                # generous: two fresh interpreters importing the server stack on a busy 2-core VM
                await sp.start(nursery, timeout=60)
                await sp.wait_for(is_event("server.listening"), timeout=30, count=2)
                async with trio.open_nursery() as calls:
                    await calls.start(hold_call, sp.url, 7, closed_with)
                    await sp.wait_for(is_event("call.started"))
                    sp.signal(signal.SIGTERM)
                assert await sp.proc.wait() == 0  # type: ignore[union-attr]
            finally:
                if sp.proc is not None and sp.proc.poll() is None:
                    sp.proc.kill()
                    await sp.proc.wait()
    assert closed_with == {7: 1001}
    assert sp.events("server.starting")[0]["workers"] == 2


async def test_crash_loop_stops_everything_with_exit_1() -> None:
    # a config every child refuses at start (an unusable Redis URL): the parent gives up
    env = base_env(TWIBRIDGE_STATE_BACKEND="redis", TWIBRIDGE_STATE_REDIS_URL="http://nope/0")
    sp = ServerProcess(env, workers_cmd(1))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            sp.proc = await trio.lowlevel.open_process(sp.args, env=env, stderr=-1)
            nursery.start_soon(sp._read_log)
            try:
                assert await sp.proc.wait() == 1
            finally:
                if sp.proc.poll() is None:
                    sp.proc.kill()
                    await sp.proc.wait()
    assert sp.events("workers.crash_loop")
    assert len(sp.events("workers.child_died")) == 3


def test_config_reaches_children_whole() -> None:
    cfg = build_config({"twilio": {"auth_token": TOKEN}, "agent": {"provider": "websocket", "websocket": {
        "url": "wss://agent.example/ws", "headers": {"Authorization": "Bearer abcdefgh"}}}})
    again = build_config(json.loads(config_payload(cfg)))
    assert again == cfg
    assert again.agent.websocket.headers["Authorization"].get_secret_value() == "Bearer abcdefgh"


def test_bind_listener_reports_the_port() -> None:
    sock = bind_listener("127.0.0.1", 0)
    try:
        assert sock.getsockname()[1] > 0 and sock.get_inheritable()
    finally:
        sock.close()
