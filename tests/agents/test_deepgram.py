"""The deepgram provider against the fake Voice Agent server, on loopback sockets."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import trio

from agent_support import connect_error, connected, speak
from fakes import silence, tone
from fakes.deepgram import API_KEY, FakeDeepgram
from twibridge.agents.base import (
    AgentDisconnected, AgentFailed, AgentProtocolError, AudioOut, CallInfo, HangupRequest, ReplyDone,
    SpeechStarted, ToolCall, ToolSpec, Transcript,
)
from twibridge.agents.deepgram import DeepgramProvider
from twibridge.config import Config, build_config

WEATHER = ToolSpec("get_weather", "The weather in a city.", {"type": "object", "properties": {
    "city": {"type": "string"}}})
CALL = CallInfo(call_sid="CA" + "3" * 32, stream_sid="MZ" + "3" * 32, tools=(WEATHER,))
UTTERANCE = silence(200) + tone(600) + silence(700)


def config(url: str, key: str = API_KEY, **extra: Any) -> Config:
    return build_config({"agent": {"provider": "deepgram", "deepgram": {"api_key": key, "url": url, **extra}}})


def provider(fake: FakeDeepgram, key: str = API_KEY, **extra: Any) -> DeepgramProvider:
    return DeepgramProvider(config(fake.url, key, **extra))


@asynccontextmanager
async def fake_server(**kwargs: Any) -> AsyncIterator[FakeDeepgram]:
    fake = FakeDeepgram(**kwargs)
    async with trio.open_nursery() as nursery:
        await fake.serve(nursery)
        yield fake
        await fake.wait_for(lambda: fake.live == 0)
        nursery.cancel_scope.cancel()


async def test_token_auth_then_one_settings_with_mulaw_and_functions() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, connected(provider(fake, greeting="Hello!"), CALL):
            pass
    assert fake.upgrades[0]["authorization"] == f"Token {API_KEY}"
    (settings,) = fake.of_type("Settings")
    assert fake.received[0] is settings and fake.errors_sent == []
    assert settings["audio"]["output"] == {"encoding": "mulaw", "sample_rate": 8000, "container": "none"}
    agent = settings["agent"]
    assert agent["greeting"] == "Hello!" and agent["listen"]["provider"] == {"type": "deepgram", "model": "nova-3"}
    functions = {f["name"]: f for f in agent["think"]["functions"]}
    assert functions["end_call"]["defer_until_eot"] is True and functions["transfer_to_human"]["defer_until_eot"]
    assert functions["get_weather"]["parameters"] == dict(WEATHER.parameters)
    assert all("endpoint" not in f for f in functions.values())  # client-side, all of them


async def test_stored_agent_id_is_sent_as_a_string() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, connected(provider(fake, agent="agent-cfg-42"), CALL):
            pass
    assert fake.of_type("Settings")[0]["agent"] == "agent-cfg-42"


async def test_audio_both_ways_untranscoded_with_transcripts() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, connected(provider(fake), CALL) as (session, ev):
            await speak(session, UTTERANCE)
            await ev.wait_for(lambda: len(ev.of(Transcript)) == 2)
    assert b"".join(fake.audio_in) == UTTERANCE  # μ-law bytes pass through
    audio = ev.of(AudioOut)
    assert b"".join(a.ulaw for a in audio) == tone(800) and {a.item_id for a in audio} == {"dg1"}
    assert ev.of(ReplyDone) == [ReplyDone("dg1")]
    assert ev.of(Transcript) == [Transcript("user", "(caller turn)"), Transcript("assistant", "(800 ms of reply)")]


async def test_user_started_speaking_is_barge_in_and_drops_the_rest_of_the_reply() -> None:
    with trio.fail_after(10):
        async with fake_server(reply_ms=3000, pace_s=0.02) as fake, connected(provider(fake), CALL) as (session, ev):
            await speak(session, UTTERANCE)
            await ev.wait_for(lambda: len(ev.of(AudioOut)) >= 2)
            await session.interrupt("dg1", 100)
            n = len(ev.of(AudioOut))
            await speak(session, tone(300))
            await ev.wait_for(lambda: len(ev.of(SpeechStarted)) == 2)
    assert len(ev.of(AudioOut)) <= n + 1  # at most a chunk already decoded when the cut came
    assert ev.of(ReplyDone) == []


async def test_tool_call_round_trip() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, connected(provider(fake), CALL) as (session, ev):
            fake.function_call = ("get_weather", '{"city":"Oslo"}')
            await speak(session, UTTERANCE)
            (call,) = await ev.wait_for(lambda: ev.of(ToolCall))
            await session.send_tool_result(call.call_id, call.name, {"temp_c": 4})
            await ev.wait_for(lambda: ev.of(ReplyDone))
    assert call == ToolCall(call.call_id, "get_weather", '{"city":"Oslo"}')
    (response,) = fake.of_type("FunctionCallResponse")
    assert response == {"type": "FunctionCallResponse", "id": call.call_id, "name": "get_weather",
                        "content": '{"temp_c":4}'}
    assert fake.of_type("Warning") == []


async def test_cancelled_function_call_is_never_answered() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, connected(provider(fake), CALL) as (session, ev):
            fake.function_call, fake.cancel_function_call = ("get_weather", "{}"), True
            await speak(session, UTTERANCE)
            (call,) = await ev.wait_for(lambda: ev.of(ToolCall))
            while not session.proto.cancelled:  # a client-side change: the fake's wait_for would need
                await trio.sleep(0.01)            # another client message after it to re-check
            await session.send_tool_result(call.call_id, call.name, {"temp_c": 4})
    assert fake.of_type("FunctionCallResponse") == [] and fake.late_responses == 0


async def test_end_call_is_answered_then_a_hangup() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, connected(provider(fake), CALL) as (session, ev):
            fake.function_call = ("end_call", '{"reason":"resolved"}')
            await speak(session, UTTERANCE)
            await ev.wait_for(lambda: ev.of(HangupRequest))
            await fake.wait_for(lambda: fake.of_type("FunctionCallResponse"))
    assert ev.of(HangupRequest) == [HangupRequest("end_call: resolved")]
    assert json.loads(fake.of_type("FunctionCallResponse")[0]["content"])["ok"] is True


async def test_keepalive_only_while_no_audio_flows() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake:
            p = provider(fake)
            p.keepalive_s = 0.05
            async with connected(p, CALL):
                await fake.wait_for(lambda: len(fake.of_type("KeepAlive")) >= 2)
    assert fake.errors_sent == []


async def test_bad_key_fails_at_once_never_shown(captured_logs: object) -> None:
    wrong = "dgwrong0123456789abcdef0123456789abcdef"
    with trio.fail_after(10):
        async with fake_server() as fake:
            error = await connect_error(provider(fake, wrong), CALL)
    assert isinstance(error, AgentFailed) and "401" in str(error)
    assert len(fake.upgrades) == 1
    assert wrong not in str(error) and wrong not in captured_logs.text  # type: ignore[attr-defined]


async def test_garbage_from_deepgram_ends_only_that_session() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake:
            fake.garbage = True
            async with connected(provider(fake), CALL) as (session, bad):
                await bad.wait_for(lambda: bad.error)
            fake.garbage = False
            async with connected(provider(fake), CALL) as (session, good):
                await speak(session, UTTERANCE)
                await good.wait_for(lambda: good.of(ReplyDone))
    assert isinstance(bad.error, AgentProtocolError) and "malformed JSON" in str(bad.error)
    assert good.of(ReplyDone) == [ReplyDone("dg1")]


async def test_session_cap_then_a_fresh_session_carries_the_conversation(captured_logs: object) -> None:
    with trio.fail_after(10):
        async with fake_server() as fake:
            p = provider(fake, greeting="Hello!")
            async with connected(p, CALL) as (session, ev):
                await speak(session, UTTERANCE)
                await ev.wait_for(lambda: len(ev.of(Transcript)) == 2)
                fake.close_after_bytes = 1
                try:
                    await speak(session, silence(200))
                except AgentDisconnected:
                    pass
                await ev.wait_for(lambda: ev.error)
            assert isinstance(ev.error, AgentDisconnected)
            async with connected(p, CALL):
                pass
    second = fake.of_type("Settings")[1]["agent"]
    assert second["context"]["messages"] == [
        {"type": "History", "role": "user", "content": "(caller turn)"},
        {"type": "History", "role": "assistant", "content": "(800 ms of reply)"}]
    assert "greeting" not in second  # no second hello mid-call
    assert API_KEY not in captured_logs.text  # type: ignore[attr-defined]
