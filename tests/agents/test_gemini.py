"""The gemini provider against the fake Live API server: setup, transcoding, barge-in, tools, resumption."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import trio

from agent_support import connect_error, connected, speak
from fakes import dbfs, silence, tone
from fakes.gemini import API_KEY, FakeGemini
from twibridge.agents.base import (
    AgentDisconnected, AgentFailed, AgentProtocolError, AudioOut, CallInfo, HangupRequest, ReplyDone,
    SpeechStarted, ToolCall, ToolSpec, Transcript,
)
from twibridge.agents.gemini import GeminiProvider
from twibridge.agents.gemini_protocol import GoAway
from twibridge.config import build_config

LOOKUP = ToolSpec("lookup", "Look an order up.", {"type": "object", "properties": {"id": {"type": "string"}}})
CALL = CallInfo(call_sid="CA" + "5" * 32, stream_sid="MZ" + "5" * 32, tools=(LOOKUP,))
UTTERANCE = silence(200) + tone(600) + silence(700)


def provider(fake: FakeGemini, key: str = API_KEY) -> GeminiProvider:
    return GeminiProvider(build_config({"agent": {"provider": "gemini", "gemini": {
        "api_key": key, "url": fake.url, "model": "gemini-live-test", "voice": "Kore", "instructions": "Be brief."}}}))


@asynccontextmanager
async def fake_server(**kwargs: Any) -> AsyncIterator[FakeGemini]:
    fake = FakeGemini(**kwargs)
    async with trio.open_nursery() as nursery:
        await fake.serve(nursery)
        yield fake
        await fake.wait_for(lambda: fake.live == 0)
        nursery.cancel_scope.cancel()


async def test_setup_first_with_model_voice_tools_and_transcription(captured_logs: object) -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, connected(provider(fake), CALL):
            pass
    assert fake.upgrades[0]["x-goog-api-key"] == API_KEY and "key=" not in fake.url
    setup = fake.received[0]["setup"]
    assert setup["model"] == "models/gemini-live-test"
    assert setup["generationConfig"]["responseModalities"] == ["AUDIO"]
    assert setup["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"] == "Kore"
    assert setup["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    names = [d["name"] for d in setup["tools"][0]["functionDeclarations"]]
    assert names == ["end_call", "transfer_to_human", "lookup"]
    assert setup["inputAudioTranscription"] == {} and setup["outputAudioTranscription"] == {}
    assert fake.closes == [] and API_KEY not in captured_logs.text  # type: ignore[attr-defined]


async def test_audio_is_transcoded_both_ways() -> None:
    with trio.fail_after(20):
        async with fake_server() as fake, connected(provider(fake), CALL) as (session, ev):
            await speak(session, UTTERANCE)
            await ev.wait_for(lambda: len(ev.of(Transcript)) == 2)
    assert len(fake.audio_in_16k) == 2 * 2 * len(UTTERANCE)  # 8 kHz μ-law → 16 kHz PCM16
    audio = b"".join(a.ulaw for a in ev.of(AudioOut))
    assert len(audio) == 8 * 800 - 8 * 0  # 24 kHz → 8 kHz: 800 ms is 6400 μ-law bytes
    assert abs(dbfs(audio[800:]) - dbfs(tone(800)[800:])) < 1.0  # the same level as a 440 Hz tone at 0.3
    assert ev.of(ReplyDone) == [ReplyDone(ev.of(AudioOut)[0].item_id)]
    assert ev.of(Transcript) == [Transcript("user", "(caller turn)"), Transcript("assistant", "(800 ms of reply)")]


async def test_interrupted_is_barge_in_and_the_rest_is_dropped() -> None:
    with trio.fail_after(20):
        async with fake_server(reply_ms=3000, pace_s=0.02) as fake, connected(provider(fake), CALL) as (session, ev):
            await speak(session, UTTERANCE)
            await ev.wait_for(lambda: len(ev.of(AudioOut)) >= 2)
            await speak(session, tone(300))
            await ev.wait_for(lambda: ev.of(SpeechStarted))
    assert ev.of(ReplyDone) == [] and len({a.item_id for a in ev.of(AudioOut)}) == 1


async def test_tool_call_round_trip_and_cancellation() -> None:
    with trio.fail_after(20):
        async with fake_server() as fake, connected(provider(fake), CALL) as (session, ev):
            fake.tool_call = ("lookup", {"id": "A1"})
            await speak(session, UTTERANCE)
            (call,) = await ev.wait_for(lambda: ev.of(ToolCall))
            await session.send_tool_result(call.call_id, call.name, {"status": "shipped"})
            await ev.wait_for(lambda: ev.of(ReplyDone))
            fake.tool_call, fake.cancel_tool_call = ("lookup", {"id": "B2"}), True
            await speak(session, UTTERANCE)
            second = (await ev.wait_for(lambda: ev.of(ToolCall)[1:]))[0]
            await fake.wait_for(lambda: session.proto.cancelled)
            await session.send_tool_result(second.call_id, second.name, {"status": "late"})
    assert call == ToolCall(call.call_id, "lookup", '{"id":"A1"}')
    (response,) = [m["toolResponse"] for m in fake.received if "toolResponse" in m]
    assert response == {"functionResponses": [{"id": call.call_id, "name": "lookup",
                                               "response": {"output": {"status": "shipped"}}}]}
    assert fake.late_responses == 0 and fake.closes == []


async def test_end_call_is_answered_then_a_hangup() -> None:
    with trio.fail_after(20):
        async with fake_server() as fake, connected(provider(fake), CALL) as (session, ev):
            fake.tool_call = ("end_call", {"reason": "bye"})
            await speak(session, UTTERANCE)
            await ev.wait_for(lambda: ev.of(HangupRequest))
            await fake.wait_for(lambda: [m for m in fake.received if "toolResponse" in m])
    assert ev.of(HangupRequest) == [HangupRequest("end_call: bye")]


async def test_go_away_then_resume_with_the_handle() -> None:
    with trio.fail_after(20):
        async with fake_server() as fake:
            p = provider(fake)
            async with connected(p, CALL) as (session, ev):
                fake.go_away_after_turn = True
                await speak(session, UTTERANCE)
                await ev.wait_for(lambda: ev.error)
            assert isinstance(ev.error, GoAway) and getattr(ev.error, "planned", False)
            assert ev.of(ReplyDone) and len(ev.of(Transcript)) == 2  # the turn was delivered first
            async with connected(p, CALL):
                pass
    assert fake.resumed == [p.handle] or fake.resumed[0].startswith("handle-1-")
    second = [m["setup"] for m in fake.received if "setup" in m][1]
    assert second["sessionResumption"]["handle"] == fake.resumed[0]
    assert not [m for m in fake.received if "clientContent" in m]  # resumed: no history replay


async def test_drop_mid_call_resumes_and_a_refused_handle_falls_back_to_history() -> None:
    with trio.fail_after(20):
        async with fake_server() as fake:
            p = provider(fake)
            async with connected(p, CALL) as (session, ev):
                await speak(session, UTTERANCE)
                await ev.wait_for(lambda: len(ev.of(Transcript)) == 2)
                fake.drop_after_messages = 1
                try:
                    await speak(session, silence(100))
                except AgentDisconnected:
                    pass
                await ev.wait_for(lambda: ev.error)
            assert type(ev.error) is AgentDisconnected
            fake.handles.clear()  # the handle expired
            retry = await connect_error(p, CALL)
            assert type(retry) is AgentDisconnected and p.handle is None
            async with connected(p, CALL):
                pass
    (seed,) = [m["clientContent"] for m in fake.received if "clientContent" in m]
    assert seed["turns"] == [{"role": "user", "parts": [{"text": "(caller turn)"}]},
                             {"role": "model", "parts": [{"text": "(800 ms of reply)"}]}]


async def test_bad_key_fails_at_once_either_reading(captured_logs: object) -> None:
    wrong = "AIzaWrong0123456789abcdefghijklmnopqrs"
    with trio.fail_after(10):
        async with fake_server() as fake:
            closed = await connect_error(provider(fake, wrong), CALL)
            fake.reject_status = 403
            refused = await connect_error(provider(fake, wrong), CALL)
    assert isinstance(closed, AgentFailed) and "1008" in str(closed)
    assert isinstance(refused, AgentFailed) and "403" in str(refused)
    assert wrong not in str(closed) + str(refused) and wrong not in captured_logs.text  # type: ignore[attr-defined]


async def test_garbage_ends_only_that_session() -> None:
    with trio.fail_after(20):
        async with fake_server() as fake:
            fake.garbage = True
            async with connected(provider(fake), CALL) as (session, bad):
                await bad.wait_for(lambda: bad.error)
            fake.garbage = False
            async with connected(provider(fake), CALL) as (session, good):
                await speak(session, UTTERANCE)
                await good.wait_for(lambda: good.of(ReplyDone))
    assert isinstance(bad.error, AgentProtocolError)
    assert json.dumps(good.of(ReplyDone)[0].item_id)
