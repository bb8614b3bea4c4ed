"""``twibridge calls show CALL_SID [--json] [--html]`` and ``simulate-call --html``: real calls, then the CLI."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from typer.testing import CliRunner

from fakes import silence, tone
from fakes.receiver import receiver
from process_support import base_env
from redis_support import RedisServer, redis_server  # noqa: F401 (fixture)
from support import ACCOUNT_SID, TOKEN, bridge, make_config
from twibridge.cli.main import app
from twibridge.simulate import CallOptions, simulate_call
from twibridge.webhooks import signing

HELLO = Path(__file__).parent.parent / "fixtures" / "audio" / "hello_22k_pcm16.wav"


async def run_show(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    r = await trio.run_process([sys.executable, "-m", "twibridge", "calls", "show", *args], env=env,
                               capture_stdout=True, capture_stderr=True, check=False)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def assert_self_contained(page: str) -> None:
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert not re.search(r"<script|<link|<img|<iframe|\bsrc=|@import|url\(", page, re.I)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)  # only the SVG namespace name


async def test_show_from_the_spool_and_the_recording(tmp_path: Path) -> None:
    secret = signing.new_secret()
    spool, recs = tmp_path / "spool", tmp_path / "rec"
    caller = silence(300) + tone(1200) + silence(800) + tone(700, freq=300) + silence(2000)
    async with receiver(secret) as rx:
        cfg = make_config(webhooks={"call_ended": rx.url, "secret": secret, "spool_dir": str(spool)},
                          recording={"enabled": True, "dir": str(recs)})
        async with bridge(cfg) as (server, rt):
            result = await simulate_call(server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
            await rx.wait(1, delivered=True)
            assert rt.deliveries is not None
            with trio.fail_after(5):
                await rt.deliveries.wait_for(lambda: rt.deliveries.depth == 0)  # type: ignore[union-attr]
    env = base_env(TWIBRIDGE_WEBHOOKS_SPOOL_DIR=str(spool), TWIBRIDGE_RECORDING_DIR=str(recs))
    page = tmp_path / "call.html"
    code, out, err = await run_show(env, result.call_sid, "--json", "--html", str(page))
    assert code == 0, err
    data = json.loads(out)
    assert data["report"]["call_sid"] == result.call_sid and data["source"] == "spool"
    assert data["delivery"]["state"] == "delivered" and data["delivery"]["attempts"] == 1
    assert data["recording"] and Path(data["recording"]).exists()
    html = page.read_text()
    assert_self_contained(html)
    assert result.call_sid in html and html.count("<polygon") == 2  # both channels drawn
    assert "barge-in" in html and "mark echoed" in html  # the timeline came from the file beside the WAV
    code, out, err = await run_show(env, result.call_sid)
    assert code == 0 and "ended       caller-hung-up" in out and "delivery    delivered" in out
    code, out, err = await run_show(env, "CA" + "0" * 32)
    assert code == 1 and "no report for" in err


async def test_show_from_redis(redis_server: RedisServer) -> None:
    cfg = make_config(state={"backend": "redis", "redis_url": redis_server.url})
    async with bridge(cfg) as (server, rt):
        result = await simulate_call(server, TOKEN, silence(300) + tone(600) + silence(1200), CallOptions(account_sid=ACCOUNT_SID, tail_s=0.3))
        while rt.calls:
            await rt.calls_changed.wait()
    env = base_env(TWIBRIDGE_STATE_BACKEND="redis", TWIBRIDGE_STATE_REDIS_URL=redis_server.url)
    code, out, err = await run_show(env, result.call_sid, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["source"] == "redis" and data["report"]["ended_reason"] == "caller-hung-up"
    redis_server.stop()
    code, _, err = await run_show(env, result.call_sid)
    assert code == 1 and "cannot reach Redis" in err


def test_simulate_call_html(tmp_path: Path, captured_logs: Any) -> None:
    page = tmp_path / "sim.html"
    result = CliRunner().invoke(app, ["simulate-call", str(HELLO), "--html", str(page), "--speed", "8", "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert_self_contained(html)
    assert "Simulated call CA" in html and html.count("<polygon") == 2 and "reply latency" in html


@pytest.mark.parametrize("text", ['<script>alert(1)</script> & "quotes"'])
def test_the_page_escapes_what_was_said(text: str) -> None:
    from twibridge.records.html import Picture, render

    page = render(Picture("t", 1000, [("k", text)], transcript=[{"role": "user", "text": text, "t_ms": 0}]))
    assert "<script>" not in page and "&lt;script&gt;" in page
