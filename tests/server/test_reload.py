"""Live reload: SIGHUP on a real ``twibridge serve`` (and ``--workers``) under live calls.

The live call keeps its agent, the next call follows the new routes, a broken
file changes nothing (and says which key), systemd hears RELOADING=1 then READY=1.
"""

from __future__ import annotations

import signal
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from conftest import LogCapture
from process_support import ServerProcess, base_env
from support import Leg, frames, make_config, media_socket, post_signed, sid, silence, tone
from test_systemd import FakeSystemd
from twibridge.config import ConfigError, build_config
from twibridge.server import reload
from twibridge.server.app import make_runtime
from twibridge.webhooks import signing

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ROUTED = """
[agents.sales]
provider = "echo"
[agents.support]
provider = "echo"
[[routes]]
to = "+15551230001"
agent = "{agent}"
"""
BROKEN = ROUTED.replace('agent = "{agent}"', 'agent = "nobody"')


def is_event(name: str, **fields: Any) -> Any:
    return lambda line: line.get("event") == name and all(line.get(k) == v for k, v in fields.items())


async def routed_agent(url: str, n: int) -> tuple[str, dict[str, str]]:
    """POST /voice for a call to the sales number: (the agent it was routed to, the <Parameter>s)."""
    form = {"CallSid": sid("CA", n), "AccountSid": "AC" + "0" * 32, "From": "+4930123", "To": "+15551230001"}
    resp = await post_signed(url, "/voice", form)
    params = {p.get("name", ""): p.get("value", "") for p in ET.fromstring(resp.text).iter("Parameter")}
    return params.get("twibridge_agent", "default"), params


async def metric(url: str, name: str) -> str:
    async with httpx.AsyncClient() as client:
        text = (await client.get(url + "/metrics")).text
    return next(line for line in text.splitlines() if line.startswith(name))


async def echo_works(leg: Leg) -> bool:
    for frame in frames(tone(400) + silence(900)):
        await leg.media(frame)
    await leg.collect(until_ms_of_audio=200, idle_s=5)
    return len(leg.audio) >= 200 * 8


async def test_sighup_reloads_for_new_calls_while_live_calls_keep_theirs(tmp_path: Path) -> None:
    path = tmp_path / "twibridge.toml"
    path.write_text(ROUTED.format(agent="sales"))
    fake = FakeSystemd(str(tmp_path / "notify"))
    sp = ServerProcess(base_env(NOTIFY_SOCKET=fake.address, TWIBRIDGE_SERVER_DRAIN_TIMEOUT_S="5"),
                       [sys.executable, "-m", "twibridge", "serve", "--config", str(path), "--host", "127.0.0.1",
                        "--port", "0"])
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await sp.start(nursery)
                await fake.wait_for("READY")
                agent, params = await routed_agent(sp.url, 1)
                assert agent == "sales"
                async with media_socket(sp.url) as ws_a:
                    live = Leg(ws_a, 1)
                    await live.start(params, token=False)
                    await sp.wait_for(is_event("call.started", agent="sales"))

                    # a good file (and a restart-only key): applied for new calls
                    path.write_text(ROUTED.format(agent="support") + "[server]\nport = 9999\n")
                    sp.signal(signal.SIGHUP)
                    await sp.wait_for(is_event("config.reloaded"))
                    assert sp.events("config.reload_needs_restart")[0]["keys"] == ["server.port"]
                    await fake.wait_for("READY", count=2)
                    agent, params_b = await routed_agent(sp.url, 2)
                    assert agent == "support"
                    async with media_socket(sp.url) as ws_b:
                        await Leg(ws_b, 2).start(params_b, token=False)
                        await sp.wait_for(is_event("call.started", agent="support"))
                        assert await echo_works(live)  # the live call goes on, undisturbed

                        # a broken file: refused, naming the keys; nothing changes
                        path.write_text(BROKEN)
                        sp.signal(signal.SIGHUP)
                        refused = await sp.wait_for(is_event("config.reload_refused"))
                        assert refused["problems"] == ["routes.0.agent: no agent 'nobody' (define [agents.nobody], "
                                                       "or 'default' for [agent])"]
                        await fake.wait_for("READY", count=3)
                        assert (await routed_agent(sp.url, 3))[0] == "support"
                        await live.stop()
                        ended = await sp.wait_for(is_event("call.ended", call_sid=sid("CA", 1)))
                        assert ended["agent"] == "sales" and ended["outcome"] == "completed"
                assert (await metric(sp.url, 'twibridge_config_reloads_total{outcome="applied"}')).endswith(" 1.0")
                assert (await metric(sp.url, 'twibridge_config_reloads_total{outcome="refused"}')).endswith(" 1.0")
                assert (await metric(sp.url, 'twibridge_agent_calls_total{agent="sales"}')).endswith(" 1.0")
                assert await sp.stop() == 0
    finally:
        fake.close()
    notices = [m for m in fake.all() if "RELOADING" in m or "READY" in m]
    assert [("RELOADING" in m, "READY" in m) for m in notices] == [(False, True)] + [(True, False), (False, True)] * 2
    assert all(int(m["MONOTONIC_USEC"]) > 0 for m in notices if "RELOADING" in m)
    assert not sp.events("call.internal_error")


async def test_workers_parent_validates_once_and_forwards(tmp_path: Path) -> None:
    path = tmp_path / "twibridge.toml"
    path.write_text(ROUTED.format(agent="sales"))
    fake = FakeSystemd(str(tmp_path / "notify"))
    sp = ServerProcess(base_env(NOTIFY_SOCKET=fake.address, TWIBRIDGE_SERVER_DRAIN_TIMEOUT_S="5"),
                       [sys.executable, "-m", "twibridge", "serve", "--config", str(path), "--workers", "2",
                        "--host", "127.0.0.1", "--port", "0"])
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await sp.start(nursery)
                await fake.wait_for("READY")
                agent, params = await routed_agent(sp.url, 1)
                assert agent == "sales"
                async with media_socket(sp.url) as ws:
                    live = Leg(ws, 1)
                    await live.start(params, token=False)
                    await sp.wait_for(is_event("call.started", agent="sales"))
                    path.write_text(ROUTED.format(agent="support"))
                    sp.signal(signal.SIGHUP)
                    await sp.wait_for(is_event("workers.reloaded"))
                    assert len(sp.events("config.reloaded")) == 2  # each worker, once
                    assert len(sp.events("config.reloading")) == 1  # read and validated once, by the parent
                    await fake.wait_for("READY", count=2)
                    for n in range(2, 6):  # whichever worker answers
                        assert (await routed_agent(sp.url, n))[0] == "support"
                    path.write_text(BROKEN)
                    sp.signal(signal.SIGHUP)
                    await sp.wait_for(is_event("config.reload_refused"))
                    await fake.wait_for("READY", count=3)
                    assert (await routed_agent(sp.url, 6))[0] == "support"
                    assert len(sp.events("config.reloaded")) == 2
                    assert await echo_works(live)
                    await live.stop()
                    ended = await sp.wait_for(is_event("call.ended", call_sid=sid("CA", 1)))
                    assert ended["agent"] == "sales"
                assert (await metric(sp.url, 'twibridge_config_reloads_total{outcome="refused"}')).endswith(" 1.0")
                assert await sp.stop() == 0
    finally:
        fake.close()
    assert not sp.events("config.reload_unconfirmed")


# ------------------------------------------------------------------ in-process parts


def test_restart_only_keys_keep_their_running_values() -> None:
    old = build_config({"server": {"port": 8080}, "state": {"backend": "memory"}})
    new = build_config({"server": {"port": 9090, "workers": 4, "max_calls": 5},
                        "state": {"backend": "redis", "redis_url": "redis://db:6379/1"}})
    assert reload.restart_only_changes(old, new) == ["server.port", "server.workers", "state.backend",
                                                     "state.redis_url"]
    kept = reload.keep_restart_only(old, new)
    assert (kept.server.port, kept.server.workers, kept.state.backend) == (8080, 1, "memory")
    assert kept.server.max_calls == 5  # everything else is the new file's


def test_what_was_set_up_at_start_waits_for_a_restart(tmp_path: Path) -> None:
    """The listener's limits, the post-call deliverer and the sweeper are built once, at start."""
    old = make_config()
    new = make_config(server={"max_body_bytes": 8192, "trusted_proxies": ["10.0.0.0/8"]},
                      webhooks={"call_ended": "https://crm.example.com/ended", "secret": signing.new_secret(),
                                "spool_dir": str(tmp_path)},
                      recording={"keep_days": 7}, calls={"max_duration_s": 60})
    assert reload.restart_only_changes(old, new) == [
        "server.max_body_bytes", "server.trusted_proxies", "webhooks.call_ended", "webhooks.secret",
        "webhooks.spool_dir", "recording.keep_days"]
    kept = reload.keep_restart_only(old, new)
    assert (kept.server.max_body_bytes, kept.webhooks.call_ended, kept.recording.keep_days) == (65536, "", 30)
    assert kept.calls.max_duration_s == 60


def test_a_file_serve_or_validate_config_would_refuse_is_refused(tmp_path: Path) -> None:
    """The same checks as ``validate-config``: the tools' secret, a sound that does not load."""
    f = tmp_path / "c.toml"
    f.write_text(f"""
[tools]
secret = "{signing.new_secret()}"
thinking_sound = "/nonexistent/thinking.wav"
[[tools.functions]]
name = "lookup_order"
description = "Look up an order"
url = "https://crm.example.com/lookup"
""")
    with pytest.raises(ConfigError) as info:
        reload.load_checked(f)
    assert "tools.thinking_sound" in [p.split(":")[0] for p in info.value.problems], info.value.problems


async def test_apply_swaps_the_snapshot_and_scrubs_new_secrets(captured_logs: LogCapture) -> None:
    rt = make_runtime(make_config())
    before = rt.config
    new = make_config(agent={"provider": "openai", "openai": {"api_key": "sk-brand-new-secret-1"}})
    reload.apply(rt, new)
    assert rt.config.agent.provider == "openai" and before.agent.provider == "echo"  # the old snapshot is intact
    from twibridge.logs import get_logger
    get_logger("t").info("leak", value="key sk-brand-new-secret-1")
    assert "sk-brand-new-secret-1" not in captured_logs.text
    assert rt.metrics is not None and rt.metrics.config_reloads.labels(outcome="applied")._value.get() == 1
