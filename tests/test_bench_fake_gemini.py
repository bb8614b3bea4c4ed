"""bench.fake_gemini speaks the Live API as twibridge's gemini provider expects: a real call hears the echo."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
import trio
import trio.testing

from agent_support import connect_error
from bench import fake_gemini
from fakes import silence, tone
from support import ACCOUNT_SID, TOKEN, bridge, make_config
from twibridge.agents.base import AgentFailed, CallInfo
from twibridge.agents.gemini import GeminiProvider
from twibridge.audio.g711 import ulaw_to_pcm16
from twibridge.audio.resample import Upsampler8kTo16k
from twibridge.simulate import CallOptions, simulate_call
from twibridge.simulate.caller import Outcome

KEY = "AIzaBench0123456789abcdefghijklmnopqrst"
AGENT = {"connect_timeout_s": 3.0, "reconnect_attempts": 0}


@pytest.fixture
def fast_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(rate=4)


@asynccontextmanager
async def fake_url() -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: fake_gemini.main_async(
            "127.0.0.1", 0, KEY, task_status=task_status, signals=False))
        yield f"ws://127.0.0.1:{port}{fake_gemini.PATH}"
        nursery.cancel_scope.cancel()


def played_ms(intervals: list[tuple[float, float]]) -> float:
    return sum(max(0.0, e - s) for s, e in intervals)


async def test_a_real_gemini_call_hears_its_echo(fast_clock: trio.testing.MockClock, captured_logs: Any) -> None:
    caller = silence(300) + tone(800) + silence(2500)
    with trio.fail_after(30):
        async with fake_url() as url:
            config = make_config(agent={**AGENT, "provider": "gemini", "gemini": {"api_key": KEY, "url": url}})
            async with bridge(config) as (server, rt):
                result = await simulate_call(server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
                while rt.calls:
                    await rt.calls_changed.wait()
    assert result.outcome is Outcome.COMPLETED and result.protocol_errors == []
    # the 800 ms utterance came back (to within a frame or two of the VAD's edges), through 16 → 24 → 8 kHz
    assert 700 <= played_ms(result.played_intervals) <= 900, result.played_intervals
    assert KEY not in captured_logs.text
    assert not captured_logs.events("agent.failed")


async def test_a_wrong_key_is_refused_as_gemini_does() -> None:
    with trio.fail_after(10):
        async with fake_url() as url:
            config = make_config(agent={**AGENT, "provider": "gemini", "gemini": {"api_key": "AIzaWrong", "url": url}})
            err = await connect_error(GeminiProvider(config), CallInfo(call_sid="CA" + "1" * 32,
                                                                       stream_sid="MZ" + "1" * 32))
    assert isinstance(err, AgentFailed) and "1008" in str(err)


def test_the_upsamplers_tail_is_not_speech() -> None:
    # twibridge's 8 → 16 kHz filter spills the end of a tone into the next 20 ms: not a voiced frame.
    up = Upsampler8kTo16k()
    pcm = up.process(ulaw_to_pcm16(tone(200) + silence(100)))
    frames = [pcm[i:i + fake_gemini.FRAME_16K] for i in range(0, len(pcm), fake_gemini.FRAME_16K)]
    assert [fake_gemini.voiced(f) for f in frames] == [True] * 10 + [False] * 5


def test_16k_to_24k_keeps_the_duration_and_the_samples() -> None:
    pcm = b"".join(int(v).to_bytes(2, "little", signed=True) for v in (100, -200, 300, -400))
    out = fake_gemini.up_16k_to_24k(pcm)
    assert [int.from_bytes(out[i:i + 2], "little", signed=True) for i in range(0, len(out), 2)] == [
        100, -200, -200, 300, -400, -400]
