"""Caps on what a peer can make a call keep, log or compute (twibridge.call.limits and the agent
caps), sans-IO and attacked through a real server: a hostile agent's giant ids, messages, notices and
transcripts; caller media far faster than real time."""

from __future__ import annotations

import base64
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
import trio
import trio_websocket

from fakes.hostile_agent import HostileAgent
from support import Leg, bridge, make_config, media_socket, silence, wait_calls
from twibridge.agents.base import MAX_AGENT_MESSAGE_BYTES, MAX_ITEM_ID_CHARS, MAX_NOTICE_CHARS, MAX_TRANSCRIPT_CHARS
from twibridge.call import limits
from twibridge.call.limits import BoundedSet, InboundRate, TranscriptKeeper, WarnLimiter
from twibridge.twilio import emulation as emu

# ------------------------------------------------------------------ sans-IO


def test_warnings_first_few_then_counted() -> None:
    w = WarnLimiter(first=3)
    assert [w.allow("notice") for _ in range(10)] == [True] * 3 + [False] * 7
    assert w.allow("other") and w.suppressed == {"notice": 7}


def test_transcript_is_bounded_per_entry_and_per_call() -> None:
    t = TranscriptKeeper()
    assert t.add("user", "x" * 10_000)
    assert len(t.entries[0]["text"]) == MAX_TRANSCRIPT_CHARS
    for _ in range(100):
        t.add("assistant", "y" * 5000)
    assert t.chars <= limits.MAX_TRANSCRIPT_TOTAL_CHARS and t.dropped > 0
    assert sum(len(e["text"]) for e in t.entries) == t.chars


def test_bounded_set_forgets_the_oldest() -> None:
    s = BoundedSet(size=3)
    for item in "abcd":
        s.add(item)
    assert "a" not in s and all(i in s for i in "bcd") and len(s) == 3


def test_inbound_rate_allows_a_backlog_but_not_a_flood() -> None:
    r = InboundRate()
    assert all(r.take(0.0) for _ in range(limits.MEDIA_BURST_FRAMES))  # a stall's backlog: fine
    assert not r.take(0.0) and r.dropped == 1
    # then ~3x real time, sustained, passes; 10x does not
    now, passed = 0.0, 0
    for _ in range(500):
        now += 0.002  # 500 frames/s
        passed += r.take(now)
    assert passed == pytest.approx(limits.MEDIA_RATE_FACTOR * limits.FRAMES_PER_S * 1.0, abs=3)
    assert r.abusive is False and r.dropped > 300


# ------------------------------------------------------------------ a hostile agent, through the bridge


@asynccontextmanager
async def agent_call(script: list[Any], **sections: Any) -> AsyncIterator[tuple[HostileAgent, Leg, Any]]:
    agent = HostileAgent(lambda conn: script if conn == 1 else [])
    async with trio.open_nursery() as nursery:
        agent_url = await agent.serve(nursery)
        cfg = make_config(agent={"provider": "websocket", "websocket": {"url": agent_url},
                                 "reconnect_backoff_s": 0.01, "reconnect_backoff_max_s": 0.02}, **sections)
        async with bridge(cfg) as (url, rt), media_socket(url) as ws:
            leg = Leg(ws, 31)
            await leg.start()
            yield agent, leg, rt
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("abuse", ["long item id", "giant message"])
async def test_oversized_ids_and_messages_drop_the_agent_connection(abuse: str, captured_logs: Any) -> None:
    audio = base64.b64encode(b"\xff" * 160).decode()
    message = ({"type": "audio", "item_id": "i" * (MAX_ITEM_ID_CHARS + 1), "audio": audio} if abuse == "long item id"
               else {"type": "transcript", "role": "user", "text": "x" * MAX_AGENT_MESSAGE_BYTES})
    with trio.fail_after(20):
        async with agent_call([message]) as (agent, leg, rt):
            await agent.wait_for(lambda: agent.connections == 2)  # dropped, then reconnected
            await leg.stop()
    (dropped,) = captured_logs.events("agent.disconnected")
    assert ("item_id" in dropped["reason"]) if abuse == "long item id" else True
    assert "i" * (MAX_ITEM_ID_CHARS + 1) not in captured_logs.text and "x" * 10_000 not in captured_logs.text


async def test_notice_and_transcript_floods_are_capped_and_counted(captured_logs: Any) -> None:
    flood = ([{"type": "error", "message": "E" * 5000, "code": "c" * 500}] * 60
             + [{"type": "transcript", "role": "user", "text": "T" * 50_000}] * 40
             + [{"type": "hangup"}])  # last: the call ends once the bridge has read the whole flood
    with trio.fail_after(20):
        async with agent_call(flood, state={"keep_transcripts": True}) as (agent, leg, rt):
            with pytest.raises(trio_websocket.ConnectionClosed):
                await leg.collect(idle_s=10)
            await wait_calls(rt, 0)
            (summary,) = await rt.registry.recent(1)
    notices = captured_logs.events("call.agent_notice")
    assert len(notices) == limits.WARNINGS_PER_KIND
    assert all(len(n["message"]) <= MAX_NOTICE_CHARS and len(n["code"]) <= 64 for n in notices)
    (ended,) = captured_logs.events("call.ended")
    assert ended["warnings_suppressed"]["agent_notice"] == 60 - limits.WARNINGS_PER_KIND
    assert ended["transcript_dropped"] > 0
    kept = summary["transcript"]
    assert sum(len(e["text"]) for e in kept) <= limits.MAX_TRANSCRIPT_TOTAL_CHARS
    assert all(len(e["text"]) <= MAX_TRANSCRIPT_CHARS for e in kept)


# ------------------------------------------------------------------ caller media (item 13)


async def send_media(ws: trio_websocket.WebSocketConnection, leg: Leg, n: int, step_ms: int) -> None:
    """``n`` frames as fast as the socket takes them (until the bridge closes it)."""
    try:
        for i in range(n):
            leg.chunk += 1
            await ws.send_message(emu.build_inbound_media(leg._next(), leg.stream_sid, leg.chunk, i * step_ms,
                                                          silence(20)))
    except trio_websocket.ConnectionClosed:
        pass


async def test_timestamp_jumps_cannot_make_the_bridge_invent_audio(captured_logs: Any) -> None:
    """100 frames, each 10 s after the last (the old bridge filled 10 s of silence for every one)."""
    async with bridge() as (url, rt), media_socket(url) as ws:
        leg = Leg(ws, 41)
        await leg.start()
        t0 = trio.current_time()
        await send_media(ws, leg, 100, 10_000)
        await leg.stop()
        await wait_calls(rt, 0)
        elapsed_ms = (trio.current_time() - t0) * 1000
    (ended,) = captured_logs.events("call.ended")
    assert ended["jitter"]["discontinuities"] >= 99
    assert ended["jitter"]["gap_ms"] <= elapsed_ms + 60 + 20


@pytest.mark.parametrize(("frames", "ends"), [(400, False), (5000, True)])
async def test_media_far_faster_than_real_time_is_dropped_then_ends_the_call(frames: int, ends: bool,
                                                                             captured_logs: Any) -> None:
    async with bridge() as (url, rt), media_socket(url) as ws:
        leg = Leg(ws, 42)
        await leg.start()
        await send_media(ws, leg, frames, 20)  # as fast as the socket takes them
        if ends:
            assert await closed_code(ws) == 1008
        else:
            await leg.stop()
        await wait_calls(rt, 0)
    (ended,) = captured_logs.events("call.ended")
    assert ended["inbound_over_rate"] > 0
    assert ended["outcome"] == ("protocol-error" if ends else "completed")
    assert len(captured_logs.events("call.inbound_over_rate")) <= limits.WARNINGS_PER_KIND


async def closed_code(ws: trio_websocket.WebSocketConnection) -> int | None:
    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
        with trio.fail_after(10):
            while True:
                await ws.get_message()
    return closed.value.reason.code


async def test_transcripts_are_not_kept_unless_asked(captured_logs: Any) -> None:
    script = [{"type": "transcript", "role": "user", "text": "my card number is 4111"}, {"type": "hangup"}]
    with trio.fail_after(20):
        async with agent_call(script) as (agent, leg, rt):  # [state] keep_transcripts = false: the default
            with pytest.raises(trio_websocket.ConnectionClosed):
                await leg.collect(idle_s=10)
            await wait_calls(rt, 0)
            (summary,) = await rt.registry.recent(1)
    assert "transcript" not in summary  # (the debug log line still shows it: log.level = "debug" here)
