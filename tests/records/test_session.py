"""A call's records end to end: OpenAI's truncate cuts the agent's text, usage is summed, times are call-relative."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
import trio
import trio.testing

from fakes import silence, tone
from fakes.openai_realtime import API_KEY, FakeRealtime
from support import ACCOUNT_SID, TOKEN, bridge, make_config
from twibridge.config import build_config
from twibridge.records.session import CallRecords
from twibridge.simulate import CallOptions, simulate_call

AGENT = {"connect_timeout_s": 3.0, "reconnect_attempts": 2, "reconnect_backoff_s": 0.05,
         "reconnect_backoff_max_s": 0.1}


@pytest.fixture
def fast_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(rate=4)


@asynccontextmanager
async def openai_bridge(fake: FakeRealtime) -> AsyncIterator[tuple[str, Any]]:
    async with trio.open_nursery() as nursery:
        url = await fake.serve(nursery)
        config = make_config(agent={**AGENT, "provider": "openai", "openai": {"api_key": API_KEY, "url": url}},
                             state={"keep_transcripts": True})  # the history keeps the transcript
        async with bridge(config) as (server, rt):
            yield server, rt
        await fake.wait_for(lambda: fake.live == 0)
        nursery.cancel_scope.cancel()


async def test_barge_in_cuts_the_agent_text_to_what_was_heard(fast_clock: trio.testing.MockClock) -> None:
    fake = FakeRealtime(reply_ms=4000)
    caller = silence(300) + tone(800) + silence(2000) + tone(800, freq=300) + silence(1500)
    with trio.fail_after(30):
        async with openai_bridge(fake) as (server, rt):
            result = await simulate_call(server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
            while rt.calls:
                await rt.calls_changed.wait()
            (summary,) = await rt.registry.recent(1)
    assert result.clears
    report = summary["report"]
    (truncate,) = fake.of_type("conversation.item.truncate")
    first = report["transcript"][0]
    assert first["role"] == "assistant" and first["item_id"] == truncate["item_id"] and first["truncated"]
    # "(4000 ms of reply)" cut where the audio was cut (~1.5 s of 4 s): a shorter head, marked with "…"
    assert first["text"].endswith("…") and len(first["text"]) < len("(4000 ms of reply)")
    # its time is when its first audio arrived, call-relative (after the caller's turn ended at 1.1 s)
    reply_at = next(e["t_ms"] for e in summary["timeline"] if e["kind"] == "reply" and e["item_id"] == first["item_id"])
    assert first["t_ms"] == reply_at and first["t_ms"] > 1100, first
    assert report["barge_ins"] == 1 and report["turns"] == 2
    provider = report["usage"]["provider"]
    assert provider["input_tokens"] == 20 and provider["output_token_details"]["audio_tokens"] > 0
    assert report["first_audio_ms"]["p50"] is not None
    kinds = {e["kind"] for e in summary["timeline"]}
    assert {"reply", "mark", "barge_in", "caller_speech", "caller_turn_end"} <= kinds


def test_truncated_text_replaces_or_is_kept() -> None:
    rec = CallRecords(build_config({}), now=100.0)
    rec.reply_audio("i1", 101.0, caller_end_at=100.5)
    assert rec.journal.first_audio_ms == [500.0]
    rec.transcript("assistant", "hello there my friend", 102.0, item_id="i1")
    rec.transcript("assistant", "hello…", 103.0, item_id="i1", truncated=True)
    rec.transcript("assistant", "cut before its text came…", 104.0, item_id="i2", truncated=True)
    rec.transcript("user", "card 4111 1111 1111 1111", 105.5)
    assert rec.journal.transcript == [
        {"role": "assistant", "text": "hello…", "t_ms": 1000, "item_id": "i1", "truncated": True},
        {"role": "assistant", "text": "cut before its text came…", "t_ms": 4000, "item_id": "i2"},
        {"role": "user", "text": "card [redacted:card]", "t_ms": 5500}]
    rec.usage({"total_tokens": 3, "output_token_details": {"audio_tokens": 2}})
    rec.usage({"total_tokens": 4, "output_token_details": {"audio_tokens": 1}, "flag": True})
    assert rec.journal.usage == {"total_tokens": 7, "output_token_details": {"audio_tokens": 3}}
