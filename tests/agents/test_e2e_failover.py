"""End to end: a simulated Twilio call whose provider fails is carried on by the next one of ``[agent] failover``.

Real bridge (Hypercorn on loopback), real simulated caller, fake providers.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
import trio
import trio.testing

from fakes import silence, tone
from fakes.deepgram import API_KEY as DG_KEY, FakeDeepgram
from fakes.openai_realtime import API_KEY as OPENAI_KEY, FakeRealtime
from support import ACCOUNT_SID, TOKEN, bridge, make_config
from twibridge.simulate import CallOptions, simulate_call
from twibridge.simulate.caller import Outcome

AGENT = {"connect_timeout_s": 3.0, "reconnect_attempts": 0, "reconnect_backoff_s": 0.05,
         "reconnect_backoff_max_s": 0.1}


@pytest.fixture
def fast_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(rate=4)


async def calls_over(rt: Any) -> None:
    while rt.calls:
        await rt.calls_changed.wait()


@asynccontextmanager
async def fakes() -> AsyncIterator[tuple[FakeRealtime, FakeDeepgram]]:
    openai, deepgram = FakeRealtime(reply_ms=600), FakeDeepgram(reply_ms=600)
    async with trio.open_nursery() as nursery:
        await openai.serve(nursery)
        await deepgram.serve(nursery)
        yield openai, deepgram
        nursery.cancel_scope.cancel()


async def test_bad_credentials_fail_over_at_once_to_the_next_provider(
    captured_logs: Any, fast_clock: trio.testing.MockClock
) -> None:
    wrong = "dgwrong-0123456789abcdef0123456789abcd"
    caller = silence(300) + tone(700) + silence(2500)
    with trio.fail_after(30):
        async with fakes() as (openai, deepgram):
            config = make_config(agent={**AGENT, "provider": "deepgram", "failover": ["openai"],
                                        "deepgram": {"api_key": wrong, "url": deepgram.url},
                                        "openai": {"api_key": OPENAI_KEY, "url": openai.url}})
            async with bridge(config) as (server, rt):
                result = await simulate_call(server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
                await calls_over(rt)
                (summary,) = await rt.registry.recent()
                metrics = rt.metrics.render(rt)[0].decode()
    assert result.outcome is Outcome.COMPLETED and result.protocol_errors == []
    assert len(deepgram.upgrades) == 1  # refused credentials: no retries
    assert openai.of_type("input_audio_buffer.append")  # the call went on on OpenAI...
    assert result.frames_received > 0  # ...and the caller heard its reply
    assert summary["agent_providers"] == ["openai"]
    assert summary["agent_failovers"] == [{"from": "deepgram", "to": "openai"}]
    assert 'twibridge_agent_failovers_total{from="deepgram",to="openai"} 1.0' in metrics
    assert wrong not in captured_logs.text and "agent.failover" in captured_logs.text


async def test_a_provider_lost_mid_call_hands_the_conversation_over(
    captured_logs: Any, fast_clock: trio.testing.MockClock
) -> None:
    caller = silence(300) + tone(700) + silence(2500) + tone(700) + silence(2500)
    with trio.fail_after(40):
        async with fakes() as (openai, deepgram):
            config = make_config(agent={**AGENT, "provider": "openai", "failover": ["deepgram", "echo"],
                                        "openai": {"api_key": OPENAI_KEY, "url": openai.url},
                                        "deepgram": {"api_key": DG_KEY, "url": deepgram.url}})
            async with bridge(config) as (server, rt):
                async with trio.open_nursery() as nursery:
                    async def drop_after_first_reply() -> None:
                        # 3 s of caller audio in: the first turn and its 600 ms reply are over.
                        await openai.wait_for(lambda: len(openai.of_type("input_audio_buffer.append")) >= 150, 20)
                        openai.drop_after_appends = 1  # the next append: a dead TCP stream

                    nursery.start_soon(drop_after_first_reply)
                    result = await simulate_call(server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
                await calls_over(rt)
                (summary,) = await rt.registry.recent()
    assert result.outcome is Outcome.COMPLETED
    assert summary["agent_providers"] == ["openai", "deepgram"]
    assert summary["agent_failovers"] == [{"from": "openai", "to": "deepgram"}]
    (settings,) = deepgram.of_type("Settings")
    history = settings["agent"]["context"]["messages"]
    assert {"type": "History", "role": "assistant", "content": "(600 ms of reply)"} in history
