"""The call_ended report: its fields (pure), a real call to a real receiver, and a killed daemon."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio
import trio_websocket

from fakes.receiver import receiver
from process_support import ServerProcess, base_env
from support import Leg, bridge, frames, make_config, media_socket, silence, tone
from twibridge.records import report as rp
from twibridge.webhooks import signing

SECRET = signing.new_secret()
FIELDS = ["call_sid", "stream_sid", "account_sid", "from", "to", "agent", "provider", "started_at", "ended_at",
          "duration_s", "outcome", "ended_reason", "transfer_to", "turns", "barge_ins", "reply_latency_ms",
          "first_audio_ms", "transcript", "tools", "recording", "usage", "params"]


def test_every_outcome_has_a_documented_reason() -> None:
    outcomes = ["completed", "caller-dropped", "transferred", "agent-failed", "agent-hangup", "idle-timeout",
                "max-duration", "shutdown", "protocol-error", "error"]  # every _set_outcome of call/runner.py
    assert {rp.ended_reason(o) for o in outcomes} == set(rp.ENDED_REASONS)
    assert rp.ended_reason("completed") == "caller-hung-up" and rp.ended_reason("agent-hangup") == "agent-hung-up"
    assert rp.ended_reason("idle-timeout") == "timeout" and rp.ended_reason(None) == "error"
    runner = (Path(__file__).resolve().parents[2] / "twibridge/call/runner.py").read_text()
    import re
    used = set(re.findall(r'(?:_set_outcome|self\.end)\("([a-z-]+)"', runner)) - {"refused-duplicate",
                                                                                 "refused-unsigned"}
    assert used <= set(rp.OUTCOME_REASONS), used - set(rp.OUTCOME_REASONS)


def test_times_and_percentiles() -> None:
    assert rp.rfc3339(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"
    assert rp.percentiles([]) == {"p50": None, "p95": None}
    assert rp.percentiles([float(i) for i in range(1, 101)]) == {"p50": 51.0, "p95": 96.0}


async def call_once(url: str, n: int = 1, say: str = "") -> Leg:
    async with media_socket(url) as ws:
        leg = Leg(ws, n)
        await leg.start({"CallSid": leg.call_sid, "From": "+15550001", "To": "+15550002", "Lang": "en"})
        for f in frames(tone(400) + silence(700)):
            await leg.media(f)
        await leg.collect(until_ms_of_audio=250, idle_s=3)
        await leg.stop()
        with pytest.raises(trio_websocket.ConnectionClosed):  # the bridge closes after stop
            await leg.collect(idle_s=3)
    return leg


async def test_a_call_posts_its_signed_report(tmp_path: Path) -> None:
    async with receiver(SECRET) as rx:
        cfg = make_config(webhooks={"call_ended": rx.url, "secret": SECRET, "spool_dir": str(tmp_path)})
        async with bridge(cfg) as (url, rt):
            leg = await call_once(url)
            (got,) = await rx.wait(1, delivered=True)
            body = got.json()
            assert rt.deliveries is not None
            with trio.fail_after(5):
                await rt.deliveries.wait_for(lambda: rt.deliveries.counts["delivered"] == 1)  # type: ignore[union-attr]
            metrics = rt.metrics.render(rt)[0].decode() if rt.metrics else ""
    assert got.signature_ok
    assert set(FIELDS) <= set(body)
    assert body["type"] == "call_ended" and body["call_sid"] == leg.call_sid and body["stream_sid"] == leg.stream_sid
    assert body["from"] == "+15550001" and body["to"] == "+15550002" and body["provider"] == "echo"
    assert body["outcome"] == "completed" and body["ended_reason"] == "caller-hung-up"
    assert body["turns"] >= 1 and body["recording"] is None and body["transfer_to"] is None
    assert body["params"] == {"CallSid": leg.call_sid, "From": "+15550001", "To": "+15550002", "Lang": "en"}
    assert "twibridge_stream_token" not in str(body)
    assert body["started_at"].endswith("Z") and body["duration_s"] > 0  # the leg sends faster than real time
    assert abs(body["usage"]["minutes"] - body["duration_s"] / 60) <= 0.001 and body["usage"]["billed_minutes"] == 1
    assert body["reply_latency_ms"]["p50"] is not None
    assert 'twibridge_webhook_deliveries_total{outcome="delivered"} 1.0' in metrics
    assert "twibridge_webhook_spool_depth 0.0" in metrics


async def test_killed_with_a_pending_delivery_then_started_again(tmp_path: Path) -> None:
    """kill -9 while the receiver holds the first attempt open; the next start delivers it, same id, once."""
    with trio.fail_after(60):
        async with receiver(SECRET, hang=True) as rx, trio.open_nursery() as nursery:
            env = base_env(TWIBRIDGE_WEBHOOKS_CALL_ENDED=rx.url, TWIBRIDGE_WEBHOOKS_SECRET=SECRET,
                           TWIBRIDGE_WEBHOOKS_SPOOL_DIR=str(tmp_path), TWIBRIDGE_WEBHOOKS_TIMEOUT_S="30")
            first = await ServerProcess(env).start(nursery)
            leg = await call_once(first.url)
            (held,) = await rx.wait(1, timeout=15)
            assert list((tmp_path / "pending").iterdir())  # on disk while the attempt is open
            first.signal(signal.SIGKILL)
            assert await first.proc.wait() == -signal.SIGKILL  # type: ignore[union-attr]
            rx.hang = False
            second = await ServerProcess(env).start(nursery)
            (got,) = await rx.wait(1, delivered=True, timeout=15)
            await second.wait_for(lambda l: l.get("event") == "webhook.delivered")
            assert got.msg_id == held.msg_id and got.signature_ok
            assert got.json()["call_sid"] == leg.call_sid
            assert [r.msg_id for r in rx.requests] == [held.msg_id, held.msg_id]
            assert len(rx.delivered) == 1
            assert not list((tmp_path / "pending").iterdir())
            await second.stop()
