"""twibridge.call.edges end to end: a greeting with no dead air, idle check-ins, the idle goodbye.

Real server on loopback, the simulator as Twilio (marks echoed only once played), fake agents;
trio's clock runs fast (MockClock rate) so seconds of quiet take a fraction of that.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import trio
import trio.testing

from fakes.openai_realtime import API_KEY, FakeRealtime
from fakes.ref_agent import RefAgent
from support import ACCOUNT_SID, TOKEN, bridge, make_config, silence, tone
from twibridge.audio.wavfile import load_caller_audio
from twibridge.simulate import CallOptions, build_report, simulate_call
from twibridge.simulate.record import Outcome

FIXTURES = Path(__file__).parent.parent / "fixtures" / "audio"
HELLO = FIXTURES / "hello_22k_pcm16.wav"  # 0.96 s
LONG = FIXTURES / "order_status_8k_mulaw.wav"  # 5.9 s
AGENT = {"connect_timeout_s": 3.0, "reconnect_attempts": 1, "reconnect_backoff_s": 0.05,
         "reconnect_backoff_max_s": 0.1}
NO_IDLE = {"idle_prompt_s": 0}


@pytest.fixture
def fast_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(rate=3)


@asynccontextmanager
async def agent_bridge(agent: RefAgent | FakeRealtime, calls: dict[str, Any],
                       agent_cfg: dict[str, Any]) -> AsyncIterator[tuple[str, Any]]:
    async with trio.open_nursery() as nursery:
        url = await agent.serve(nursery)
        provider = "websocket" if isinstance(agent, RefAgent) else "openai"
        sub = {"url": url} if provider == "websocket" else {"api_key": API_KEY, "url": url}
        config = make_config(agent={**AGENT, "provider": provider, provider: sub, **agent_cfg}, calls=calls)
        async with bridge(config) as (server, rt):
            yield server, rt
        nursery.cancel_scope.cancel()


def heard_runs(result: Any, gap_ms: float = 100) -> list[tuple[int, int]]:
    """(start, end) ms of each stretch of audio the caller heard (played intervals, joined)."""
    runs: list[list[float]] = []
    for start, end in sorted(result.played_intervals):
        if runs and start - runs[-1][1] <= gap_ms:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([start, end])
    return [(round(a), round(b)) for a, b in runs]


async def test_greeting_sound_then_the_agents_own_greeting(fast_clock: Any, captured_logs: Any) -> None:
    agent = RefAgent(reply_ms=600)
    with trio.fail_after(30):
        async with agent_bridge(agent, {"greeting_sound": str(HELLO), **NO_IDLE},
                                {"greeting": "Thanks for calling Acme."}) as (server, _):
            result = await simulate_call(server, TOKEN, silence(4000), CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
    assert result.ok, (result.outcome, result.detail)
    sound = load_caller_audio(HELLO).ulaw
    # heard_ulaw is on the call's timeline; the sound goes out in 100 ms chunks (a loaded
    # machine may leave a gap between two), so look for its first and its last chunk.
    chunks = [c for i in range(0, len(sound), 800) if (c := sound[i:i + 800]).strip(b"\xff")]  # not silence
    found = [result.heard_ulaw.find(c) for c in chunks]
    runs = heard_runs(result)
    assert found == sorted(found) and found[0] >= 0  # every chunk of it, in order
    assert abs(found[0] / 8 - runs[0][0]) <= 1  # the bridge's sound is the first thing heard
    after = result.heard_ulaw[found[-1] + len(chunks[-1]):]
    greeting = after[: len(after.rstrip(b"\xff"))].lstrip(b"\xff")
    assert len(greeting) >= 8 * 550  # then the agent's own greeting (600 ms), after the sound, not over it
    (start,) = agent.of_type("start")
    assert start["greeting"] == "Thanks for calling Acme."
    report = build_report(result)
    assert report["pickup_to_audio_ms"] is not None and report["pickup_to_audio_ms"] < len(sound) // 8
    (ended,) = captured_logs.events("call.ended")
    assert isinstance(ended["pickup_to_audio_ms"], float)


async def test_openai_speaks_first_without_a_sound(fast_clock: Any) -> None:
    fake = FakeRealtime(reply_ms=800)
    with trio.fail_after(30):
        async with agent_bridge(fake, NO_IDLE, {"greeting": "Hello from Acme!"}) as (server, _):
            result = await simulate_call(server, TOKEN, silence(3000), CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
    assert result.ok, (result.outcome, result.detail)
    (greet,) = fake.of_type("response.create")
    assert "Hello from Acme!" in greet["response"]["instructions"]
    assert result.heard_ulaw and build_report(result)["pickup_to_audio_ms"] is not None


async def test_no_greeting_on_a_reconnect(fast_clock: Any) -> None:
    agent = RefAgent(reply_ms=300)
    agent.drop_after_frames = 60  # the connection breaks 1.2 s in; the supervisor reconnects
    with trio.fail_after(30):
        async with agent_bridge(agent, NO_IDLE, {"greeting": "Hi!"}) as (server, _):
            result = await simulate_call(server, TOKEN, silence(3000), CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
    assert result.ok
    starts = agent.of_type("start")
    assert len(starts) == 2 and starts[0]["greeting"] == "Hi!" and "greeting" not in starts[1]


async def test_barge_in_over_the_greeting_sound_cuts_it_and_spares_the_agent(fast_clock: Any) -> None:
    agent = RefAgent(reply_ms=400)
    caller = silence(1500) + tone(1200, amp=0.9) + silence(2500)  # louder than the sound: no echo
    with trio.fail_after(30):
        async with agent_bridge(agent, {"greeting_sound": str(LONG), **NO_IDLE}, {}) as (server, _):
            result = await simulate_call(server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
    assert result.ok, (result.outcome, result.detail)
    sound = load_caller_audio(LONG).ulaw
    assert result.clears and 1500 <= result.clears[0] < len(sound) / 8  # cut after the caller spoke up
    assert sum(e - s for s, e in result.played_intervals) < len(sound) / 8  # not the whole 5.9 s
    assert all(not str(m.get("item_id", "")).startswith("bridge:") for m in agent.of_type("interrupt"))
    assert all(not str(m.get("item_id", "")).startswith("bridge:") for m in agent.of_type("mark"))


async def test_idle_check_ins_then_goodbye_and_hang_up(fast_clock: Any, captured_logs: Any) -> None:
    cfg = make_config(calls={"idle_prompt_s": 3, "idle_prompts": 2})
    with trio.fail_after(30):
        async with bridge(cfg) as (server, _):
            result = await simulate_call(server, TOKEN, silence(20_000), CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
    assert result.outcome is Outcome.SERVER_CLOSED  # the bridge hung up, not the caller
    runs = heard_runs(result)
    assert len(runs) == 2  # two soft tones (the echo agent cannot be asked to speak)
    assert runs[0][0] >= 3000 and runs[1][0] >= 6000  # each after (never before) 3 s of quiet
    assert runs[1][0] - runs[0][1] >= 3000 - 100  # counted from when the first was played
    assert result.call_ms < 20_000
    (ended,) = captured_logs.events("call.ended")
    assert ended["outcome"] == "caller-idle"
    assert [e["by"] for e in captured_logs.events("call.idle_check_in")] == ["tone", "tone"]


async def test_idle_counts_from_when_the_greeting_was_played(fast_clock: Any) -> None:
    cfg = make_config(calls={"idle_prompt_s": 3, "idle_prompts": 1, "greeting_sound": str(LONG)})
    with trio.fail_after(30):
        async with bridge(cfg) as (server, _):
            result = await simulate_call(server, TOKEN, silence(15_000), CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
    sound = load_caller_audio(LONG).ulaw
    last = [c for i in range(0, len(sound), 800) if (c := sound[i:i + 800]).strip(b"\xff")][-1]
    greeting_end = (result.heard_ulaw.find(last) + len(last)) / 8
    assert greeting_end >= 5000  # the whole sound was heard
    check_in = next(s for s, _ in heard_runs(result) if s > greeting_end + 50)
    assert check_in >= greeting_end + 3000 - 100  # not 3 s after the sound was *sent*


async def test_speech_resets_the_quiet(fast_clock: Any) -> None:
    cfg = make_config(calls={"idle_prompt_s": 3, "idle_prompts": 1})
    caller = silence(2000) + tone(800) + silence(7000)
    with trio.fail_after(30):
        async with bridge(cfg) as (server, _):
            result = await simulate_call(server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
    runs = heard_runs(result)
    # the echo of the caller's words, then (3 s after it was heard) the check-in tone
    assert len(runs) >= 2
    assert runs[1][0] >= runs[0][1] + 3000 - 100


async def test_openai_is_asked_to_check_in(fast_clock: Any, captured_logs: Any) -> None:
    fake = FakeRealtime(reply_ms=600)
    with trio.fail_after(30):
        async with agent_bridge(fake, {"idle_prompt_s": 2, "idle_prompts": 1}, {}) as (server, _):
            await simulate_call(server, TOKEN, silence(12_000), CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
    items = [m["item"] for m in fake.of_type("conversation.item.create")]
    system = [i for i in items if i.get("role") == "system"]
    assert len(system) == 2  # the check-in, then the goodbye
    assert "still there" in system[0]["content"][0]["text"] and "goodbye" in system[1]["content"][0]["text"]
    assert len(fake.of_type("response.create")) == 2
    assert [e["by"] for e in captured_logs.events("call.idle_check_in")] == ["agent"]
    (ended,) = captured_logs.events("call.ended")
    assert ended["outcome"] == "caller-idle"
