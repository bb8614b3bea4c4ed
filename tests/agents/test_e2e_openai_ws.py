"""End to end: simulated Twilio call → the real bridge → the openai / websocket provider → a fake agent.

What each test proves, in the provider's own terms: audio reaches the agent
and its reply reaches the caller's ear; a barge-in arrives at OpenAI as
``response.cancel`` + ``conversation.item.truncate`` at the position the
caller really heard (measured by the simulator's playback emulation, not by
the bridge); a dropped agent is reconnected and the call carries on; an agent
that cannot come back ends the call; no secret reaches the logs.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
import trio
import trio.testing

from fakes import silence, tone
from fakes.openai_realtime import API_KEY, FakeRealtime
from fakes.ref_agent import RefAgent
from support import ACCOUNT_SID, TOKEN, bridge, make_config
from twibridge.simulate import CallOptions, simulate_call
from twibridge.simulate.caller import Outcome

#: Fast enough to recover from a drop within a test, slow enough to stay deterministic.
AGENT = {"connect_timeout_s": 3.0, "reconnect_attempts": 2, "reconnect_backoff_s": 0.05,
         "reconnect_backoff_max_s": 0.1}
AGENT_TOKEN = "agent-header-secret-0123456789"


@pytest.fixture
def fast_clock() -> trio.testing.MockClock:
    """Trio time at 4× real time for the bridge, the simulator and the fakes alike."""
    return trio.testing.MockClock(rate=4)


def played_ms(intervals: list[tuple[float, float]], until: float | None = None) -> float:
    return sum(max(0.0, min(e, until if until is not None else e) - s) for s, e in intervals)


@asynccontextmanager
async def openai_bridge(fake: FakeRealtime) -> AsyncIterator[tuple[str, Any]]:
    async with trio.open_nursery() as nursery:
        url = await fake.serve(nursery)
        config = make_config(agent={**AGENT, "provider": "openai", "openai": {"api_key": API_KEY, "url": url}})
        async with bridge(config) as (server, rt):
            yield server, rt
        await fake.wait_for(lambda: fake.live == 0)  # the bridge said goodbye and closed
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def websocket_bridge(agent: RefAgent) -> AsyncIterator[tuple[str, Any]]:
    async with trio.open_nursery() as nursery:
        url = await agent.serve(nursery)
        config = make_config(agent={**AGENT, "provider": "websocket", "websocket": {
            "url": url, "headers": {"Authorization": f"Bearer {AGENT_TOKEN}"}}})
        async with bridge(config) as (server, rt):
            yield server, rt
        await agent.wait_for(lambda: agent.live == 0)  # the bridge said goodbye and closed
        nursery.cancel_scope.cancel()


async def calls_over(rt: Any) -> None:
    while rt.calls:
        await rt.calls_changed.wait()


async def test_openai_audio_flows_both_ways(
    captured_logs: Any, fast_clock: trio.testing.MockClock
) -> None:
    fake = FakeRealtime(reply_ms=800)
    caller = silence(300) + tone(800) + silence(2500)
    with trio.fail_after(20):
        async with openai_bridge(fake) as (server, rt):
            result = await simulate_call(server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
            await calls_over(rt)
    assert result.outcome is Outcome.COMPLETED and result.protocol_errors == []
    # every caller frame reached OpenAI (the bridge may drop none on a healthy call)
    assert len(fake.of_type("input_audio_buffer.append")) >= result.frames_sent - 5
    assert fake.received[0]["type"] == "session.update"
    # the whole reply played to the caller
    assert 700 <= played_ms(result.played_intervals) <= 900
    assert fake.errors_sent == []
    assert API_KEY not in captured_logs.text


async def test_openai_barge_in_truncates_where_the_caller_stopped_hearing(
    captured_logs: Any, fast_clock: trio.testing.MockClock
) -> None:
    fake = FakeRealtime(reply_ms=4000)
    # turn 1 ends at 1100 ms (+500 ms server VAD silence) → the reply starts ≈ 1.6 s;
    # the caller talks over it from 3.1 s, i.e. ≈ 1.5 s into the reply
    caller = silence(300) + tone(800) + silence(2000) + tone(800, freq=300) + silence(1500)
    with trio.fail_after(30):
        async with openai_bridge(fake) as (server, rt):
            result = await simulate_call(server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
            await calls_over(rt)
    assert result.outcome is Outcome.COMPLETED and result.clears, "no barge-in happened"
    truncates = fake.of_type("conversation.item.truncate")
    assert len(truncates) == 1, fake.received
    first_reply_item = truncates[0]["item_id"]
    cancel_at = next(i for i, m in enumerate(fake.received) if m["type"] == "response.cancel")
    assert fake.received[cancel_at + 1]["type"] == "conversation.item.truncate"
    heard = played_ms(result.played_intervals, until=result.clears[0])
    assert 1000 <= heard <= 2500, heard
    # the bridge's heard position matches what the simulated phone actually played, to about one chunk
    assert abs(truncates[0]["audio_end_ms"] - heard) <= 150, (truncates[0], heard)
    assert first_reply_item.startswith("item_c1_")
    # no truncate beyond the generated audio; the server-side cancel made ours a harmless no-op
    assert [e["code"] for e in fake.errors_sent] in ([], ["response_cancel_not_active"])
    assert API_KEY not in captured_logs.text


async def test_openai_drop_reconnects_and_audio_resumes(
    captured_logs: Any, fast_clock: trio.testing.MockClock
) -> None:
    fake = FakeRealtime(reply_ms=600)
    fake.drop_after_appends = 25  # 0.5 s into the call
    caller = silence(1000) + tone(800) + silence(2500)
    with trio.fail_after(30):
        async with openai_bridge(fake) as (server, rt):
            result = await simulate_call(server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
            await calls_over(rt)
    assert fake.drops == 1 and fake.connections == 2
    assert result.outcome is Outcome.COMPLETED
    # the reply to what the caller said after the drop reached them
    assert played_ms(result.played_intervals) >= 500
    assert [line["attempt"] for line in captured_logs.events("agent.disconnected")] == [1]
    assert API_KEY not in captured_logs.text


async def test_openai_that_cannot_come_back_ends_the_call(
    captured_logs: Any, fast_clock: trio.testing.MockClock
) -> None:
    fake = FakeRealtime()
    fake.drop_after_appends = 25
    fake.reject_status = None
    caller = silence(4000)
    with trio.fail_after(30):
        async with openai_bridge(fake) as (server, rt):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_refuse_after_first_connection, fake)
                result = await simulate_call(server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
            await calls_over(rt)
    assert result.outcome is Outcome.SERVER_CLOSED, result.detail
    ended = captured_logs.events("call.ended")
    assert ended and ended[-1]["outcome"] == "agent-failed"
    assert len(captured_logs.events("agent.disconnected")) == AGENT["reconnect_attempts"] + 1
    assert API_KEY not in captured_logs.text


async def _refuse_after_first_connection(fake: FakeRealtime) -> None:
    await fake.wait_for(lambda: fake.connections >= 1, timeout=10)
    fake.reject_status = 503


async def test_openai_end_call_function_hangs_up(
    captured_logs: Any, fast_clock: trio.testing.MockClock
) -> None:
    fake = FakeRealtime(reply_ms=600)
    fake.function_call = ("end_call", '{"reason":"issue resolved"}')
    caller = silence(300) + tone(800) + silence(6000)
    with trio.fail_after(30):
        async with openai_bridge(fake) as (server, rt):
            result = await simulate_call(server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
            await calls_over(rt)
    assert result.outcome is Outcome.SERVER_CLOSED, result.detail
    assert played_ms(result.played_intervals) >= 500  # the goodbye played before the hang-up
    assert fake.of_type("conversation.item.create")[0]["item"]["type"] == "function_call_output"
    assert captured_logs.events("call.ended")[-1]["outcome"] == "agent-hangup"


async def test_websocket_agent_end_to_end(
    captured_logs: Any, fast_clock: trio.testing.MockClock
) -> None:
    agent = RefAgent(headers={"Authorization": f"Bearer {AGENT_TOKEN}"}, reply_ms=4000)
    caller = silence(300) + tone(800) + silence(2000) + tone(800, freq=300) + silence(1500)
    with trio.fail_after(30):
        async with websocket_bridge(agent) as (server, rt):
            result = await simulate_call(server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5, dtmf=[(0.2, "5")]))
            await calls_over(rt)
    assert result.outcome is Outcome.COMPLETED and result.protocol_errors == []
    start = agent.received[0]
    assert start["type"] == "start" and start["call"]["call_sid"] == result.call_sid
    assert len(agent.audio_in) >= len(caller) - 8 * 100
    assert agent.of_type("dtmf") == [{"type": "dtmf", "digit": "5"}]
    assert agent.of_type("mark"), "no mark reached the agent"
    (interrupt,) = agent.of_type("interrupt")
    heard = played_ms(result.played_intervals, until=result.clears[0])
    assert interrupt["item_id"] == "reply-1" and abs(interrupt["heard_ms"] - heard) <= 150, (interrupt, heard)
    assert agent.received[-1] == {"type": "stop"}, agent.received[-4:]
    assert AGENT_TOKEN not in captured_logs.text


async def test_websocket_agent_drop_reconnects(
    captured_logs: Any, fast_clock: trio.testing.MockClock
) -> None:
    agent = RefAgent(headers={"Authorization": f"Bearer {AGENT_TOKEN}"}, reply_ms=600)
    agent.drop_after_frames = 25
    caller = silence(1000) + tone(800) + silence(2500)
    with trio.fail_after(30):
        async with websocket_bridge(agent) as (server, rt):
            result = await simulate_call(server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
            await calls_over(rt)
    assert agent.connections == 2 and len(agent.of_type("start")) == 2
    assert agent.of_type("start")[1]["call"]["call_sid"] == result.call_sid
    assert result.outcome is Outcome.COMPLETED and played_ms(result.played_intervals) >= 500
    assert AGENT_TOKEN not in captured_logs.text
