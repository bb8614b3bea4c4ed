"""The openai provider against the fake Realtime server, on loopback sockets."""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import AsyncIterator

import pytest
import trio

from fakes import SessionEvents, frames, silence, tone
from fakes.openai_realtime import API_KEY, FakeRealtime
from agent_support import connect_error, connected, speak
from twibridge.agents.base import (
    AgentDisconnected, AgentFailed, AudioOut, CallInfo, HangupRequest, ReplyDone, SpeechStarted, Transcript,
    TransferRequest,
)
from twibridge.agents.openai import OpenAIProvider, OpenAISession, realtime_url
from twibridge.config import Config, build_config
from twibridge.agents.wsclient import connect_ws

CALL = CallInfo(call_sid="CA" + "1" * 32, stream_sid="MZ" + "1" * 32, from_number="+15551230000")
UTTERANCE = silence(200) + tone(600) + silence(700)  # one caller turn, as the fake's VAD sees it


def config(url: str, key: str = API_KEY) -> Config:
    return build_config({"agent": {"provider": "openai", "openai": {"api_key": key, "url": url}}})


def session_for(fake: FakeRealtime, provider: OpenAIProvider | None = None,
                key: str = API_KEY) -> AbstractAsyncContextManager[tuple[OpenAISession, SessionEvents]]:
    return connected(provider or OpenAIProvider(config(fake.url, key)), CALL)


@asynccontextmanager
async def fake_server(**kwargs: object) -> AsyncIterator[FakeRealtime]:
    fake = FakeRealtime(**kwargs)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await fake.serve(nursery)
        yield fake
        await fake.wait_for(lambda: fake.live == 0)  # the provider closed its socket
        nursery.cancel_scope.cancel()




def test_realtime_url() -> None:
    assert realtime_url("wss://api.openai.com/v1/realtime", "gpt-realtime") == (
        "wss://api.openai.com/v1/realtime?model=gpt-realtime")
    assert realtime_url("ws://h/v1/realtime?x=1", "m") == "ws://h/v1/realtime?x=1&model=m"
    assert realtime_url("ws://h/v1/realtime?model=other", "m") == "ws://h/v1/realtime?model=other"


async def test_connects_with_bearer_key_and_ga_session_first() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, session_for(fake):
            pass
    (headers,) = fake.upgrades
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert "openai-beta" not in headers
    first = fake.received[0]
    assert first["type"] == "session.update" and first["session"]["type"] == "realtime"
    assert first["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert fake.errors_sent == []


async def test_audio_flows_both_ways() -> None:
    with trio.fail_after(10):
        async with fake_server(reply_ms=800) as fake, session_for(fake) as (session, events):
            await speak(session, UTTERANCE)
            await events.wait_for(lambda: events.of(ReplyDone))
            await events.wait_for(lambda: events.of(Transcript))
    appended = fake.of_type("input_audio_buffer.append")
    assert len(appended) == len(frames(UTTERANCE))
    assert events.of(SpeechStarted) == [SpeechStarted(0)]
    audio = events.of(AudioOut)
    assert len({a.item_id for a in audio}) == 1 and events.of(ReplyDone) == [ReplyDone(audio[0].item_id)]
    assert b"".join(a.ulaw for a in audio) == tone(800)
    assert events.of(Transcript) == [Transcript("assistant", "(800 ms of reply)", item_id=audio[0].item_id)]
    assert fake.errors_sent == []


async def test_batched_frames_are_one_append_and_mean_the_same_audio() -> None:
    """What the supervisor sends when frames waited (``audio_batch_frames``): one longer append."""
    batch = OpenAISession.audio_batch_frames
    chunks = [b"".join(frames(UTTERANCE)[i:i + batch]) for i in range(0, len(frames(UTTERANCE)), batch)]
    with trio.fail_after(10):
        async with fake_server(reply_ms=800) as fake, session_for(fake) as (session, events):
            for chunk in chunks:
                await session.send_audio(chunk)
            await events.wait_for(lambda: events.of(ReplyDone))
    assert batch > 1 and len(fake.of_type("input_audio_buffer.append")) == len(chunks)
    assert events.of(SpeechStarted) == [SpeechStarted(0)]
    assert b"".join(a.ulaw for a in events.of(AudioOut)) == tone(800)
    assert fake.errors_sent == []


async def test_barge_in_cancels_and_truncates_at_the_heard_position() -> None:
    with trio.fail_after(10):
        async with fake_server(reply_ms=3000, pace_s=0.02) as fake, session_for(fake) as (session, events):
            await speak(session, UTTERANCE)
            await events.wait_for(lambda: len(events.of(AudioOut)) >= 3)
            item = events.of(AudioOut)[0].item_id
            await session.interrupt(item, 240)
            n_audio = len(events.of(AudioOut))
            await fake.wait_for(lambda: fake.of_type("conversation.item.truncate"))
            await events.wait_for(lambda: events.of(Transcript))  # the cancelled response has ended
    cancel_at = next(i for i, m in enumerate(fake.received) if m["type"] == "response.cancel")
    assert fake.received[cancel_at + 1] == {"type": "conversation.item.truncate", "item_id": item,
                                            "content_index": 0, "audio_end_ms": 240}
    assert fake.errors_sent == []  # truncate within what was generated; the response was active
    assert len(events.of(AudioOut)) == n_audio  # no audio of the cancelled response after the interrupt
    assert events.of(ReplyDone) == []


async def test_barge_in_with_nothing_heard_skips_truncate() -> None:
    with trio.fail_after(10):
        async with fake_server(reply_ms=3000, pace_s=0.02) as fake, session_for(fake) as (session, events):
            await speak(session, UTTERANCE)
            item = (await events.wait_for(lambda: events.of(AudioOut)))[0].item_id
            await session.interrupt(item, 0)
            await fake.wait_for(lambda: fake.of_type("response.cancel"))
            await events.wait_for(lambda: events.of(Transcript))
    assert fake.of_type("conversation.item.truncate") == []


async def test_caller_speech_during_reply_is_a_speech_started_event() -> None:
    with trio.fail_after(10):
        async with fake_server(reply_ms=3000, pace_s=0.02) as fake, session_for(fake) as (session, events):
            await speak(session, UTTERANCE)
            await events.wait_for(lambda: events.of(AudioOut))
            await speak(session, tone(300))
            await events.wait_for(lambda: len(events.of(SpeechStarted)) == 2)
            # server VAD cancelled the response itself; our cancel then finds nothing (harmless, not surfaced)
            await session.interrupt(events.of(AudioOut)[0].item_id, 100)
            await fake.wait_for(lambda: fake.errors_sent)
    assert fake.errors_sent[0]["code"] == "response_cancel_not_active"
    assert not [e for e in events.events if type(e).__name__ == "AgentNotice"]


@pytest.mark.parametrize("with_name", [True, False])
async def test_end_call_function_is_answered_then_hangs_up(with_name: bool) -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, session_for(fake) as (session, events):
            fake.function_call = ("end_call", '{"reason":"resolved"}')
            fake.omit_function_name = not with_name
            await speak(session, UTTERANCE)
            await events.wait_for(lambda: events.of(HangupRequest))
            await fake.wait_for(lambda: fake.of_type("conversation.item.create"))
    assert events.of(HangupRequest) == [HangupRequest("end_call: resolved")]
    (output,) = fake.of_type("conversation.item.create")
    assert output["item"]["type"] == "function_call_output" and output["item"]["call_id"].startswith("call_")
    assert fake.of_type("response.create") == []
    assert fake.errors_sent == []  # the call_id was the server's


async def test_transfer_function_answers_and_model_speaks_again() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, session_for(fake) as (session, events):
            fake.function_call = ("transfer_to_human", '{"reason":"billing"}')
            await speak(session, UTTERANCE)
            await events.wait_for(lambda: events.of(TransferRequest))
            await events.wait_for(lambda: len(events.of(ReplyDone)) == 2)  # the announcement
    assert events.of(TransferRequest) == [TransferRequest(None)]
    assert [m["type"] for m in fake.received[-2:]] == ["conversation.item.create", "response.create"]
    assert fake.errors_sent == []


@pytest.mark.parametrize("mode", ["http", "event"])
async def test_bad_key_is_agent_failed_and_never_shown(mode: str, captured_logs: object) -> None:
    wrong = "sk-wrong-key-0123456789abcdefghijkl"
    with trio.fail_after(10):
        async with fake_server() as fake:
            fake.auth_error_event = mode == "event"
            error = await connect_error(OpenAIProvider(config(fake.url, wrong)), CALL)
    assert isinstance(error, AgentFailed)
    assert "invalid_api_key" in str(error) or "401" in str(error)
    assert wrong not in str(error) and wrong not in captured_logs.text  # type: ignore[attr-defined]


@pytest.mark.parametrize(("status", "error"), [(503, AgentDisconnected), (429, AgentDisconnected),
                                               (403, AgentFailed), (404, AgentFailed)])
async def test_refused_upgrade(status: int, error: type[Exception]) -> None:
    with trio.fail_after(10):
        async with fake_server() as fake:
            fake.reject_status = status
            got = await connect_error(OpenAIProvider(config(fake.url)), CALL)
    assert type(got) is error and str(status) in str(got)


async def test_unreachable_is_agent_disconnected() -> None:
    with trio.fail_after(10):
        got = await connect_error(OpenAIProvider(config("ws://127.0.0.1:1/v1/realtime")), CALL)
    assert type(got) is AgentDisconnected and "cannot connect" in str(got)


async def test_drop_mid_call_is_agent_disconnected() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake, session_for(fake) as (session, events):
            fake.drop_after_appends = 20
            try:
                await speak(session, silence(2000))
            except AgentDisconnected:
                pass  # the drop may surface in send as well as in receive
            await events.wait_for(lambda: events.error)
    assert isinstance(events.error, AgentDisconnected)


async def test_reconnect_seeds_the_new_session_with_the_transcript() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake:
            provider = OpenAIProvider(config(fake.url))
            async with session_for(fake, provider) as (session, events):
                await speak(session, UTTERANCE)
                await events.wait_for(lambda: events.of(Transcript))
            async with session_for(fake, provider):
                pass
    second = [m for m in fake.received if m["type"] in ("session.update", "conversation.item.create")][1:]
    assert [m["type"] for m in second] == ["session.update", "conversation.item.create"]
    assert second[1]["item"] == {"type": "message", "role": "assistant",
                                 "content": [{"type": "output_text", "text": "(800 ms of reply)"}]}


async def test_key_absent_from_logs(captured_logs: object) -> None:
    with trio.fail_after(10):
        async with fake_server() as fake:
            async with session_for(fake) as (session, events):
                await speak(session, UTTERANCE)
                await events.wait_for(lambda: events.of(ReplyDone))
                await session.interrupt(events.of(AudioOut)[0].item_id, 100)
            fake.drop_after_appends = 1
            async with session_for(fake) as (session, events):
                await session.send_audio(silence(20))
                await events.wait_for(lambda: events.error)
    text = captured_logs.text  # type: ignore[attr-defined]
    assert "agent.openai.session_ready" in text and API_KEY not in text


# -- the fake itself is as strict as the real server ------------------------------


async def test_fake_rejects_beta_session_and_overshooting_truncate() -> None:
    with trio.fail_after(10):
        async with fake_server() as fake:
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with connect_ws(fake.url + "?model=gpt-realtime", headers) as ws:
                assert json.loads(await ws.get_message())["type"] == "session.created"
                await ws.send_message(json.dumps({"type": "session.update", "session": {
                    "modalities": ["audio"], "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}}))
                err = json.loads(await ws.get_message())
                assert err["type"] == "error" and "input_audio_format" in err["error"]["message"]
                await ws.send_message(json.dumps({"type": "conversation.item.truncate", "item_id": "x",
                                                  "content_index": 0, "audio_end_ms": 5}))
                assert json.loads(await ws.get_message())["error"]["code"] == "session_not_configured"
            async with trio.open_nursery() as nursery:
                session = await OpenAIProvider(config(fake.url)).connect(CALL, nursery)
                events = SessionEvents(session)
                nursery.start_soon(events.run)
                await speak(session, UTTERANCE)
                await events.wait_for(lambda: events.of(ReplyDone))
                item = events.of(AudioOut)[0].item_id
                await session.sock.send(json.dumps({"type": "conversation.item.truncate", "item_id": item,
                                                    "content_index": 0, "audio_end_ms": 801}))
                await fake.wait_for(lambda: fake.errors_sent)
                await session.aclose()
                nursery.cancel_scope.cancel()
    assert "already shorter than 801ms" in fake.errors_sent[-1]["message"]
