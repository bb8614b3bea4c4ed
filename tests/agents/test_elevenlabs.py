"""The elevenlabs provider against the fake ElevenLabs server (WebSocket + signed-URL HTTP)."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
import trio

from agent_support import connect_error, connected, speak
from fakes import silence, tone
from fakes.elevenlabs import AGENT_ID, API_KEY, FakeElevenLabs
from twibridge.agents.base import (
    AgentDisconnected, AgentFailed, AgentProtocolError, AudioOut, CallInfo, HangupRequest, ReplyDone,
    SpeechStarted, ToolCall, Transcript, TransferRequest,
)
from twibridge.agents.elevenlabs import ElevenLabsProvider
from twibridge.config import build_config

CALL = CallInfo(call_sid="CA" + "4" * 32, stream_sid="MZ" + "4" * 32, from_number="+15551230000",
                to_number="+15559870000", params={"tier": "gold"})
UTTERANCE = silence(200) + tone(600) + silence(700)


def provider(fake: FakeElevenLabs, key: str | None = None, agent_id: str = AGENT_ID) -> ElevenLabsProvider:
    cfg = {"agent_id": agent_id, "url": fake.ws_url, "api_base_url": fake.http_url}
    if key is not None:
        cfg["api_key"] = key
    return ElevenLabsProvider(build_config({"agent": {"provider": "elevenlabs", "elevenlabs": cfg}}))


@asynccontextmanager
async def fake_server(**kwargs: Any) -> AsyncIterator[FakeElevenLabs]:
    fake = FakeElevenLabs(**kwargs)
    async with trio.open_nursery() as nursery:
        await fake.serve(nursery)
        yield fake
        await fake.wait_for(lambda: fake.live == 0)
        nursery.cancel_scope.cancel()


async def test_public_agent_initiation_with_dynamic_variables_and_pong() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, connected(provider(fake), CALL) as (session, ev):
            await fake.wait_for(lambda: fake.pongs)
    first = fake.received[0]
    assert first["type"] == "conversation_initiation_client_data"
    assert first["dynamic_variables"] == {"tier": "gold", "twilio_call_sid": CALL.call_sid,
                                          "caller_number": "+15551230000", "called_number": "+15559870000"}
    assert fake.of_type("pong") == [{"type": "pong", "event_id": 77}]
    assert fake.signed_url_requests == []


async def test_private_agent_fetches_a_fresh_signed_url_per_connection(captured_logs: object) -> None:
    with trio.fail_after(10):
        async with fake_server(private=True) as fake:
            p = provider(fake, API_KEY)
            for _ in range(2):  # a signature is single-use: each connection needs its own
                async with connected(p, CALL):
                    pass
    assert [h["xi-api-key"] for h in fake.signed_url_requests] == [API_KEY, API_KEY]
    assert fake.connections == 2
    text = captured_logs.text  # type: ignore[attr-defined]
    assert API_KEY not in text and "conversation_signature" not in text


async def test_audio_both_ways_and_transcripts() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, connected(provider(fake), CALL) as (session, ev):
            await speak(session, UTTERANCE)
            await ev.wait_for(lambda: ev.of(ReplyDone))
    chunks = [m for m in fake.received if "user_audio_chunk" in m]
    assert b"".join(__import__("base64").b64decode(m["user_audio_chunk"]) for m in chunks) == UTTERANCE
    assert all(set(m) == {"user_audio_chunk"} for m in chunks)  # no "type" key
    audio = ev.of(AudioOut)
    assert b"".join(a.ulaw for a in audio) == tone(800) and len({a.item_id for a in audio}) == 1
    assert ev.of(ReplyDone) == [ReplyDone(audio[0].item_id)]
    assert ev.of(Transcript) == [Transcript("user", "(caller turn)"), Transcript("assistant", "(800 ms of reply)")]


async def test_interruption_is_barge_in_and_older_audio_is_dropped() -> None:
    with trio.fail_after(10):
        async with fake_server(reply_ms=3000, pace_s=0.02) as fake, connected(provider(fake), CALL) as (session, ev):
            await speak(session, UTTERANCE)
            await ev.wait_for(lambda: len(ev.of(AudioOut)) >= 2)
            await speak(session, tone(300))
            await ev.wait_for(lambda: ev.of(SpeechStarted))
    assert session.proto.last_interrupt_id >= 2
    first = ev.of(AudioOut)[0].item_id
    assert ev.of(ReplyDone) == [] and all(a.item_id == first for a in ev.of(AudioOut))


async def test_client_tool_round_trip() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, connected(provider(fake), CALL) as (session, ev):
            fake.client_tool = ("lookup_order", {"order": "A1"})
            await speak(session, UTTERANCE)
            (call,) = await ev.wait_for(lambda: ev.of(ToolCall))
            await session.send_tool_result(call.call_id, call.name, {"status": "shipped"})
            await ev.wait_for(lambda: ev.of(ReplyDone))
    assert call.name == "lookup_order" and json.loads(call.arguments) == {"order": "A1"}
    assert fake.tool_results == [{"type": "client_tool_result", "tool_call_id": call.call_id,
                                  "result": '{"status":"shipped"}', "is_error": False}]


@pytest.mark.parametrize(("name", "expected"), [("end_call", HangupRequest("end_call")),
                                                ("transfer_to_human", TransferRequest(None))])
async def test_builtin_client_tools(name: str, expected: object) -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, connected(provider(fake), CALL) as (session, ev):
            fake.client_tool = (name, {})
            await speak(session, UTTERANCE)
            await ev.wait_for(lambda: expected in ev.events)
            await fake.wait_for(lambda: fake.tool_results)
    assert fake.tool_results[0]["is_error"] is False


async def test_server_close_1000_after_end_call_is_the_agent_hanging_up() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, connected(provider(fake), CALL) as (session, ev):
            fake.end_call_after_reply = True
            await speak(session, UTTERANCE)
            await ev.wait_for(lambda: ev.of(HangupRequest))
    assert ev.of(HangupRequest) == [HangupRequest("elevenlabs: the agent ended the conversation")]
    assert b"".join(a.ulaw for a in ev.of(AudioOut)) == tone(800)  # the goodbye came first


async def test_wrong_formats_refuse_the_call_with_what_to_set() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake:
            fake.output_format = "pcm_16000"
            error = await connect_error(provider(fake), CALL)
    assert isinstance(error, AgentFailed)
    assert "agent_output_audio_format=pcm_16000" in str(error) and "ulaw_8000" in str(error)


async def test_bad_key_fails_at_once_never_shown(captured_logs: object) -> None:
    wrong = "sk_wrong0123456789abcdef0123456789abcdef0123"
    with trio.fail_after(10):
        async with fake_server(private=True) as fake:
            error = await connect_error(provider(fake, wrong), CALL)
            unknown = await connect_error(provider(fake, API_KEY, agent_id="agent_nope"), CALL)
    assert isinstance(error, AgentFailed) and "401" in str(error) and wrong not in str(error)
    assert isinstance(unknown, AgentFailed) and "404" in str(unknown)
    assert fake.connections == 0 and len(fake.signed_url_requests) == 2
    assert wrong not in captured_logs.text  # type: ignore[attr-defined]


async def test_unknown_public_agent_is_final() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake:
            error = await connect_error(provider(fake, agent_id="agent_nope"), CALL)
    assert isinstance(error, AgentFailed) and "1008" in str(error)


async def test_unreachable_signed_url_endpoint_may_be_retried() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake:
            fake.http_url = "http://127.0.0.1:1"
            error = await connect_error(provider(fake, API_KEY), CALL)
    assert type(error) is AgentDisconnected


async def test_garbage_ends_only_that_session_and_reconnect_carries_context() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake:
            p = provider(fake)
            async with connected(p, CALL) as (session, ev):
                await speak(session, UTTERANCE)
                await ev.wait_for(lambda: ev.of(ReplyDone))
            fake.garbage = True
            async with connected(p, CALL) as (session, bad):
                await bad.wait_for(lambda: bad.error)
    assert isinstance(bad.error, AgentProtocolError)
    (update,) = fake.of_type("contextual_update")
    assert "Caller: (caller turn)" in update["text"] and "Agent: (800 ms of reply)" in update["text"]
