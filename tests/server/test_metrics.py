"""GET /metrics after real calls over real sockets: every counter the issue names moves, with the right labels."""

from __future__ import annotations

from typing import Any

import xml.etree.ElementTree as ET

import httpx
import pytest
import trio
import trio_websocket
from prometheus_client.parser import text_string_to_metric_families

from faulty_agents import ModalProvider
from rawws import TrioClient
from support import (
    Leg, bridge, frames, make_config, media_socket, post_signed, sid, silence, stream_params, tone, wait_calls,
)
from twibridge.server import systemd
from twibridge.server.app import make_runtime
from twibridge.twilio import emulation as emu

VOICE = {"AccountSid": "AC" + "0" * 32, "From": "+15005550006", "To": "+15005550001"}
METRICS_TOKEN = "metrics-bearer-0123456789"


async def scrape(url: str, token: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=5) as client:
        resp = await client.get(url + "/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=")  # the Prometheus text format
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def outcome(samples: dict, name: str) -> float:
    return value(samples, "twibridge_calls_total", outcome=name)


async def echo_call(url: str, n: int, *, barge_in: bool = False) -> Leg:
    """One utterance, its echo; with ``barge_in`` the caller talks over the echo once it starts."""
    async with media_socket(url) as ws:
        leg = Leg(ws, n)
        await leg.start()
        for f in frames(tone(800, 440) + silence(700)):
            await leg.media(f)
        if barge_in:
            await leg.collect(until_ms_of_audio=100, idle_s=3)  # the echo is playing
            for f in frames(tone(600, 660) + silence(100)):
                await leg.media(f)
        await leg.collect(idle_s=1.0)
        await leg.stop()
        with pytest.raises(trio_websocket.ConnectionClosed):
            while True:
                await ws.get_message()
    return leg


async def test_counters_move_with_real_calls(monkeypatch, captured_logs) -> None:
    monkeypatch.setattr(systemd, "LAG_PROBE_PERIOD_S", 0.02)
    cfg = make_config(server={"max_calls": 1}, agent={"reconnect_attempts": 1, "reconnect_backoff_s": 0.01})
    rt = make_runtime(cfg)
    rt.provider_factory = lambda c: ModalProvider(c)
    with trio.fail_after(60):
        async with bridge(cfg, rt) as (url, _):
            before = await scrape(url)
            assert value(before, "twibridge_active_calls") == 0
            assert all(v == 0 for (name, _), v in before.items() if name == "twibridge_calls_total")

            # completed, with a live-call gauge and a busy refusal while it runs (max_calls = 1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo_call, url, 1)
                await wait_calls(rt, 1)
                during = await scrape(url)
                busy = await post_signed(url, "/voice", {**VOICE, "CallSid": sid("CA", 99)})
            assert value(during, "twibridge_active_calls") == 1
            assert [c.tag for c in ET.fromstring(busy.text)] == ["Say", "Hangup"]
            await echo_call(url, 2, barge_in=True)

            # caller drop (no close frame), protocol error, agent failure, reconnect
            client = await TrioClient.connect(url)
            await client.text(emu.build_start(1, sid("MZ", 3), VOICE["AccountSid"], sid("CA", 3), stream_params(sid("CA", 3), {})))
            await wait_calls(rt, 1)
            await client.abort()
            await wait_calls(rt, 0)
            for n, mode, extra in ((5, "echo", "{not json"), (6, "fail", None), (7, "drop-once", None)):
                async with media_socket(url) as ws:
                    leg = Leg(ws, n)
                    await leg.start({"mode": mode})
                    if extra:
                        await ws.send_message(extra)
                    if mode == "drop-once":
                        for f in frames(tone(300, 500) + silence(600)):
                            await leg.media(f)
                        await leg.collect(until_ms_of_audio=100, idle_s=3)
                        await leg.stop()
                    with pytest.raises(trio_websocket.ConnectionClosed):
                        while True:
                            await ws.get_message()

            # refused: unsigned webhook and upgrade
            assert (await post_signed(url, "/voice", {**VOICE, "CallSid": sid("CA", 98)}, signature="bad")
                    ).status_code == 403
            with pytest.raises(trio_websocket.ConnectionRejected):
                async with media_socket(url, signature="bad"):
                    pass  # pragma: no cover
            await wait_calls(rt, 0)
            after = await scrape(url)

    ended = {e["call_sid"]: e for e in captured_logs.events("call.ended")}
    assert {e["outcome"] for e in ended.values()} == {"completed", "caller-dropped", "protocol-error", "agent-failed"}
    assert outcome(after, "completed") == 3  # the echo calls and the reconnected one
    assert outcome(after, "caller_hung_up") == 1
    assert outcome(after, "protocol_error") == 1
    assert outcome(after, "agent_failed") == 1
    assert outcome(after, "refused_busy") == 1
    assert outcome(after, "refused_unsigned") == 2
    assert outcome(after, "error") == 0
    assert value(after, "twibridge_active_calls") == 0 and value(after, "twibridge_pending_sockets") == 0
    assert value(after, "twibridge_inbound_frames_total") == sum(e["frames_in"] for e in ended.values()) > 100
    assert value(after, "twibridge_outbound_messages_total") == sum(e["messages_out"] for e in ended.values()) > 0
    assert value(after, "twibridge_outbound_audio_seconds_total") > 0.5
    assert value(after, "twibridge_barge_ins_total") == 1
    assert value(after, "twibridge_clear_latency_seconds_count") == 1
    assert value(after, "twibridge_reply_latency_seconds_count") >= 2
    assert value(after, "twibridge_agent_reconnects_total") == 1
    assert value(after, "twibridge_event_loop_lag_seconds_count") > 0
    for reason in ("late", "duplicate", "agent_buffer"):
        assert ("twibridge_inbound_frames_dropped_total", (("reason", reason),)) in after
    for name in ("twibridge_inbound_frames_gap_filled_total", "twibridge_inbound_frames_reordered_total",
                 "twibridge_inbound_buffer_frames", "twibridge_draining", "twibridge_registry_degraded"):
        assert (name, ()) in after, name


async def test_idle_timeout_is_counted() -> None:
    async with bridge(make_config(calls={"idle_timeout_s": 0.2})) as (url, rt):
        async with media_socket(url) as ws:
            await Leg(ws, 1).start()
            with pytest.raises(trio_websocket.ConnectionClosed), trio.fail_after(5):
                await ws.get_message()
        await wait_calls(rt, 0)
        samples = await scrape(url)
    assert outcome(samples, "idle_timeout") == 1
    assert sum(v for (name, _), v in samples.items() if name == "twibridge_calls_total") == 1


async def test_jitter_counters_reordered_gap_filled_and_dropped() -> None:
    """Frames out of order, a gap, a duplicate and a late frame, as a broken proxy would send them."""
    async with bridge() as (url, rt):
        async with media_socket(url) as ws:
            leg = Leg(ws, 1)
            await leg.start()
            f = silence(20)
            send = lambda seq, chunk: ws.send_message(  # noqa: E731
                emu.build_inbound_media(seq, leg.stream_sid, chunk, (chunk - 1) * 20, f))
            # 3 before 2: reordered; 3 again: duplicate; 4 missing beyond the 60 ms window: skipped
            # (20 ms filled), then late; 9 jumps 420 ms ahead in time: 21 frames filled.  Sent at
            # the pace of their timestamps (as Twilio would): gap fills are bounded by wall time.
            t0 = trio.current_time()
            for seq, chunk in [(1, 1), (3, 3), (2, 2), (3, 3), (5, 5), (6, 6), (7, 7), (8, 8), (4, 4), (9, 30)]:
                await trio.sleep_until(t0 + (chunk - 1) * 0.020)
                await send(seq, chunk)
            await leg.stop()
            with trio.fail_after(5):
                while rt.calls:
                    await rt.calls_changed.wait()
        samples = await scrape(url)
    assert value(samples, "twibridge_inbound_frames_total") == 10
    assert value(samples, "twibridge_inbound_frames_reordered_total") == 1
    assert value(samples, "twibridge_inbound_frames_gap_filled_total") == 1 + 21
    assert value(samples, "twibridge_inbound_frames_dropped_total", reason="duplicate") == 1
    assert value(samples, "twibridge_inbound_frames_dropped_total", reason="late") == 1


async def test_duplicate_stream_is_counted_as_refused_duplicate() -> None:
    async with bridge() as (url, rt):
        async with media_socket(url) as first:
            await Leg(first, 5).start()
            await wait_calls(rt, 1)
            async with media_socket(url) as second:
                await Leg(second, 5).start()
                with pytest.raises(trio_websocket.ConnectionClosed):
                    with trio.fail_after(5):
                        await second.get_message()
        samples = await scrape(url)
    assert outcome(samples, "refused_duplicate") == 1


async def get_metrics(url: str, headers: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(url + "/metrics", headers=headers)


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Basic {METRICS_TOKEN}"},
    {"Authorization": f"Bearer {METRICS_TOKEN}x"},
    {"Authorization": f"bearer{METRICS_TOKEN}"},
    {"Authorization": f"Bearer {METRICS_TOKEN[:-1]}"},  # a prefix (compared in constant time, issue #23)
    {"Authorization": b"Bearer \xff\xfe\x80"},  # not ASCII: refused, not a 500
])
async def test_metrics_token_is_enforced(headers: dict[str, Any], captured_logs) -> None:
    async with bridge(make_config(server={"metrics_token": METRICS_TOKEN})) as (url, _):
        refused = await get_metrics(url, headers)
        allowed = await get_metrics(url, {"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert refused.status_code == 401 and "twibridge_" not in refused.text
    assert METRICS_TOKEN not in refused.text
    assert allowed.status_code == 200 and "twibridge_calls_total" in allowed.text
    assert METRICS_TOKEN not in captured_logs.text


async def test_no_token_configured_means_open_metrics() -> None:
    async with bridge() as (url, _):
        resp = await get_metrics(url, {})
    assert resp.status_code == 200 and "twibridge_active_calls 0.0" in resp.text
