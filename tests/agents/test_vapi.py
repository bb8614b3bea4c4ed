"""twibridge.agents.vapi against the fake VAPI (REST + WebSocket) on 127.0.0.1."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected

from fakes import Recorder, frames, silence, tone
from fakes.vapi import API_KEY, ASSISTANT_ID, FakeVapi, FakeVapiCall
from agent_support import speak
from twibridge.agents.base import (
    AgentDisconnected, AgentEvent, AgentFailed, AgentNotice, AudioOut, CallInfo, HangupRequest, ReplyDone,
    SpeechStarted, Transcript, TransferRequest,
)
from twibridge.agents.supervisor import AgentSupervisor
from twibridge.agents.vapi import VapiProvider, VapiSession
from twibridge.config import Config, build_config
from twibridge.agents.wsclient import connect_ws

CALL = CallInfo(call_sid="CA" + "a" * 32, stream_sid="MZ" + "a" * 32, from_number="+15551230000",
                to_number="+15559870000")


def vapi_config(url: str, api_key: str = API_KEY, **agent: Any) -> Config:
    return build_config({"agent": {"provider": "vapi", "connect_timeout_s": 5, **agent,
                                   "vapi": {"api_key": api_key, "assistant_id": ASSISTANT_ID, "base_url": url}}})


@asynccontextmanager
async def fake_vapi(**kw: Any) -> AsyncIterator[FakeVapi]:
    fake = FakeVapi(**kw)
    async with fake.running():
        yield fake


@asynccontextmanager
async def vapi_session(fake: FakeVapi, **cfg: Any) -> AsyncIterator[tuple[VapiSession, FakeVapiCall]]:
    provider = VapiProvider(vapi_config(fake.url, **cfg))
    async with trio.open_nursery() as nursery:
        session = await provider.connect(CALL, nursery)
        try:
            yield session, await fake.wait_calls(len(fake.calls))
        finally:
            with trio.move_on_after(3, shield=True):
                await session.aclose()
            nursery.cancel_scope.cancel()



async def events_until(session: VapiSession, done: Callable[[AgentEvent], bool]) -> list[AgentEvent]:
    out = []
    while True:
        ev = await session.receive()
        out.append(ev)
        if done(ev):
            return out


# -- the happy path --------------------------------------------------------------------------


async def test_create_call_then_audio_both_ways() -> None:
    with trio.fail_after(10):
        async with fake_vapi(pace_s=0.002) as fake, vapi_session(fake) as (session, call):
            req = fake.requests[0]
            assert req["authorized"] and req["content_type"] == "application/json"
            assert req["body"]["assistantId"] == ASSISTANT_ID
            assert req["body"]["transport"]["audioFormat"] == {"format": "mulaw", "container": "raw",
                                                               "sampleRate": 8000}
            caller = tone(400) + silence(300)
            await speak(session, caller)
            events = await events_until(session, lambda ev: isinstance(ev, ReplyDone))
            audio = [ev for ev in events if isinstance(ev, AudioOut)]
            assert {ev.item_id for ev in audio} == {"vapi-1"} and events[-1] == ReplyDone("vapi-1")
            assert b"".join(ev.ulaw for ev in audio) == bytes(call.audio_out)  # bytes untouched
            assert len(call.audio_out) == 8 * 400  # the caller's words, echoed
            assert any(isinstance(ev, Transcript) and ev.role == "user" for ev in events)
            await call.recorder.wait_for(lambda: len(call.audio_in) == len(caller))
            assert bytes(call.audio_in) == caller


async def test_user_interrupted_is_barge_in_and_the_next_reply_is_a_new_item() -> None:
    with trio.fail_after(10):
        async with fake_vapi(pace_s=0.02) as fake, vapi_session(fake) as (session, call):
            await speak(session, tone(600) + silence(300))
            await events_until(session, lambda ev: isinstance(ev, AudioOut))
            await speak(session, tone(200))  # the caller talks over the reply
            events = await events_until(session, lambda ev: isinstance(ev, SpeechStarted))
            assert all(ev.item_id == "vapi-1" for ev in events if isinstance(ev, AudioOut))
            assert call.interruptions == 1
            await speak(session, silence(300))
            later = await events_until(session, lambda ev: isinstance(ev, AudioOut))
            assert later[-1].item_id == "vapi-2"  # type: ignore[union-attr]


async def test_interrupt_sends_nothing_and_dtmf_is_a_quiet_system_message() -> None:
    with trio.fail_after(10):
        async with fake_vapi(echo=False) as fake, vapi_session(fake) as (session, call):
            await session.interrupt("vapi-1", 480)
            await session.mark_played("vapi-1", 480)
            await session.send_dtmf("5")
            first = await call.recorder.wait_for(lambda: call.received)
            assert first == [{"type": "add-message", "triggerResponseEnabled": False,
                              "message": {"role": "system", "content": "The caller pressed the phone key '5'."}}]


# -- control messages ---------------------------------------------------------------------------


async def test_hang_is_a_notice_and_a_persistent_stall_fails_the_agent() -> None:
    with trio.fail_after(10):
        async with fake_vapi(echo=False, wrap=True) as fake, vapi_session(fake) as (session, call):
            for n in (1, 2):
                await call.send_json({"type": "hang"})
                ev = await session.receive()
                assert isinstance(ev, AgentNotice) and ev.code == "vapi.hang", ev
            await call.send_json({"type": "hang"})
            with pytest.raises(AgentFailed, match="stalled"):
                await session.receive()


async def test_end_call_tool_is_a_hangup_request() -> None:
    with trio.fail_after(10):
        async with fake_vapi(echo=False) as fake, vapi_session(fake) as (session, call):
            await call.tool_call("end_call", {"reason": "done"})
            assert await session.receive() == HangupRequest("vapi tool end_call")


async def test_transfer_tool_then_vapi_ending_is_a_transfer_only() -> None:
    with trio.fail_after(10):
        async with fake_vapi(echo=False) as fake, vapi_session(fake) as (session, call):
            await call.tool_call("transfer_to_human", {"to": "+15557654321"}, declares=("to",))
            assert await session.receive() == TransferRequest("+15557654321")
            await call.send_json({"type": "status-update", "status": "ended", "endedReason": "assistant-forwarded-call"})
            await call.send_json({"type": "transcript", "role": "assistant", "transcriptType": "final",
                                  "transcript": "transferring you"})
            assert await session.receive() == Transcript("assistant", "transferring you")  # no HangupRequest between


async def test_assistant_ending_the_call_is_a_hangup_request() -> None:
    with trio.fail_after(10):
        async with fake_vapi(echo=False) as fake, vapi_session(fake) as (session, call):
            await call.send_json({"type": "status-update", "status": "ended", "endedReason": "assistant-ended-call"})
            assert await session.receive() == HangupRequest("vapi ended the call: assistant-ended-call")


# -- failures ---------------------------------------------------------------------------------------


async def test_bad_key_is_agent_failed_and_never_quoted() -> None:
    with trio.fail_after(10):
        async with fake_vapi() as fake:
            wrong = "vapi-wrong-key-abcdef0123456789"
            async with trio.open_nursery() as nursery:
                with pytest.raises(AgentFailed, match=r"HTTP 401.*agent.vapi.api_key") as info:
                    await VapiProvider(vapi_config(fake.url, api_key=wrong)).connect(CALL, nursery)
            assert wrong not in str(info.value) and not fake.calls
            assert fake.requests[0]["authorized"] is False


async def test_unknown_assistant_is_agent_failed() -> None:
    with trio.fail_after(10):
        async with fake_vapi(assistant_ids={"someone-else"}) as fake, trio.open_nursery() as nursery:
            with pytest.raises(AgentFailed, match="HTTP 400.*Does Not Exist"):
                await VapiProvider(vapi_config(fake.url)).connect(CALL, nursery)


async def test_server_errors_and_unreachable_api_are_disconnects() -> None:
    with trio.fail_after(10):
        async with fake_vapi() as fake, trio.open_nursery() as nursery:
            fake.fail_next = (503, {"message": "upstream busy", "statusCode": 503})
            with pytest.raises(AgentDisconnected, match="HTTP 503"):
                await VapiProvider(vapi_config(fake.url)).connect(CALL, nursery)
            with pytest.raises(AgentDisconnected, match="ConnectError"):
                await VapiProvider(vapi_config("http://127.0.0.1:1")).connect(CALL, nursery)


async def test_drop_mid_call_is_agent_disconnected() -> None:
    with trio.fail_after(10):
        async with fake_vapi(echo=False) as fake, vapi_session(fake) as (session, call):
            await call.drop(1011)
            with pytest.raises(AgentDisconnected, match="closed"):
                await session.receive()
            with pytest.raises(AgentDisconnected):
                await session.send_audio(silence(20))


async def test_a_stalled_upgrade_keeps_the_callers_deadline() -> None:
    with trio.fail_after(10):
        async with fake_vapi() as fake, trio.open_nursery() as nursery:
            fake.stall_upgrades = True
            start = trio.current_time()
            with pytest.raises(trio.TooSlowError):
                with trio.fail_after(0.3):  # the supervisor's connect timeout
                    await VapiProvider(vapi_config(fake.url)).connect(CALL, nursery)
            assert trio.current_time() - start < 1.0 and fake.upgrades == 1


async def test_cancelling_during_the_handshake_abandons_it_at_once() -> None:
    with trio.fail_after(10):
        async with fake_vapi() as fake:
            fake.stall_upgrades = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(VapiProvider(vapi_config(fake.url)).connect, CALL, nursery)
                await fake.recorder.wait_for(lambda: fake.upgrades)
                start = trio.current_time()
                nursery.cancel_scope.cancel()  # the call ended while connecting
            assert trio.current_time() - start < 0.5


async def test_call_url_cannot_be_reused() -> None:
    with trio.fail_after(10):
        async with fake_vapi(echo=False) as fake, vapi_session(fake) as (session, call):
            with pytest.raises(ConnectionRejected):
                async with connect_ws(call.ws_url):
                    pass


# -- goodbye -------------------------------------------------------------------------------------------


async def test_aclose_sends_end_call_then_closes() -> None:
    with trio.fail_after(10):
        async with fake_vapi(echo=False) as fake:
            async with vapi_session(fake) as (session, call):
                await session.aclose()
                await call.closed.wait()
            assert call.received == [{"type": "end-call"}]


async def test_a_cancelled_connection_still_says_end_call() -> None:
    with trio.fail_after(10):
        async with fake_vapi(echo=False) as fake:
            async with trio.open_nursery() as nursery:
                await VapiProvider(vapi_config(fake.url)).connect(CALL, nursery)
                call = await fake.wait_calls(1)
                start = trio.current_time()
                nursery.cancel_scope.cancel()  # what the supervisor does on a drop (before aclose)
            assert trio.current_time() - start < 0.5  # no close handshake sat out
            await call.closed.wait()
            assert call.received == [{"type": "end-call"}]


# -- through the supervisor: reconnect with context; secrets -------------------------------------------


async def test_reconnect_is_a_new_call_briefed_with_the_conversation_so_far() -> None:
    with trio.fail_after(10):
        async with fake_vapi(pace_s=0.002) as fake:
            provider = VapiProvider(vapi_config(fake.url))
            async with trio.open_nursery() as nursery:
                session = await provider.connect(CALL, nursery)
                first = await fake.wait_calls(1)
                assert "firstMessageMode" not in first.body["assistantOverrides"]
                await speak(session, tone(300) + silence(300))
                await events_until(session, lambda ev: isinstance(ev, ReplyDone))
                await first.drop()
                with pytest.raises(AgentDisconnected):
                    await session.receive()
                await session.aclose()
                session = await provider.connect(CALL, nursery)  # what the supervisor does next
                second = await fake.wait_calls(2)
                assert second.id != first.id
                assert second.body["assistantOverrides"]["firstMessageMode"] == "assistant-waits-for-user"
                briefing = await second.recorder.wait_for(lambda: second.received)
                assert briefing[0]["type"] == "add-message" and briefing[0]["triggerResponseEnabled"] is False
                assert "user: caller turn 0 (300 ms)" in briefing[0]["message"]["content"]
                await speak(session, tone(200) + silence(300))  # audio resumes on the new call
                events = await events_until(session, lambda ev: isinstance(ev, ReplyDone))
                assert sum(len(ev.ulaw) for ev in events if isinstance(ev, AudioOut)) == 8 * 200
                await session.aclose()
            # Another call's provider never hears this caller's words.
            other = VapiProvider(vapi_config(fake.url))
            other.connects = 1  # as if reconnecting
            async with trio.open_nursery() as nursery:
                session = await other.connect(CallInfo(call_sid="CA" + "b" * 32, stream_sid="MZ" + "b" * 32), nursery)
                third = await fake.wait_calls(3)
                await session.aclose()
            assert third.received == [{"type": "end-call"}]


async def test_supervisor_reconnects_with_a_new_call_and_the_conversation_so_far(captured_logs: Any) -> None:
    with trio.fail_after(15):
        async with fake_vapi(pace_s=0.002) as fake:
            cfg = vapi_config(fake.url, reconnect_backoff_s=0.05, reconnect_backoff_max_s=0.1)
            got: list[AgentEvent] = []
            seen = Recorder()

            async def on_event(ev: AgentEvent) -> None:
                got.append(ev)
                seen.changed()

            sup = AgentSupervisor(VapiProvider(cfg), CALL, cfg.agent, on_event)
            async with trio.open_nursery() as nursery:
                await nursery.start(sup.run)
                first = await fake.wait_calls(1)
                for f in frames(tone(300) + silence(300)):
                    sup.push_audio(f)
                await seen.wait_for(lambda: any(isinstance(ev, ReplyDone) for ev in got))
                await first.drop()
                second = await fake.wait_calls(2)
                assert second.body["assistantOverrides"]["firstMessageMode"] == "assistant-waits-for-user"
                briefing = await second.recorder.wait_for(lambda: second.received)
                assert briefing[0]["type"] == "add-message" and "user: caller turn 0" in \
                    briefing[0]["message"]["content"] and briefing[0]["triggerResponseEnabled"] is False
                got.clear()
                for f in frames(tone(200) + silence(300)):
                    sup.push_audio(f)
                await seen.wait_for(lambda: any(isinstance(ev, ReplyDone) for ev in got))
                assert sup.reconnects == 1
                nursery.cancel_scope.cancel()
            await second.closed.wait()
            assert {"type": "end-call"} in second.received
            text = captured_logs.text
            for secret in (API_KEY, first.id, first.ws_url, second.id, second.ws_url):
                assert secret not in text
            assert captured_logs.events("agent.vapi.connected")


async def test_secrets_stay_out_of_logs_and_errors(captured_logs: Any) -> None:
    with trio.fail_after(10):
        async with fake_vapi(echo=False) as fake:
            errors: list[str] = []
            async with vapi_session(fake) as (session, call):
                await call.send_json({"type": "hang"})
                await call.tool_call("transfer_to_human", {"to": "+15557654321"}, declares=("to",))
                await events_until(session, lambda ev: isinstance(ev, TransferRequest))
                await call.drop()
                try:
                    await session.receive()
                except AgentDisconnected as exc:
                    errors.append(str(exc))
            fake.fail_next = (500, {"message": "boom"})
            async with trio.open_nursery() as nursery:
                try:
                    await VapiProvider(vapi_config(fake.url)).connect(CALL, nursery)
                except AgentDisconnected as exc:
                    errors.append(str(exc))
            assert len(errors) == 2
            haystack = captured_logs.text + "\n".join(errors)
            for secret in (API_KEY, call.id, call.ws_url):
                assert secret not in haystack
            assert captured_logs.events("agent.vapi.hang") and captured_logs.events("agent.vapi.event")


# -- end to end: Twilio leg → the real bridge → VapiProvider → fake VAPI ------------------------------


@asynccontextmanager
async def bridged_call(fake: FakeVapi, rest_url: str) -> AsyncIterator[tuple[Any, Any, FakeVapiCall]]:
    """The real bridge with the VAPI provider and Twilio REST pointed at fakes; one Twilio leg, started."""
    from support import Leg, bridge, make_config, media_socket

    cfg = make_config(agent={"provider": "vapi", "connect_timeout_s": 5,
                             "vapi": {"api_key": API_KEY, "assistant_id": ASSISTANT_ID, "base_url": fake.url}},
                      twilio={"api_base_url": rest_url}, fallback={"dial": "+15550003333"})
    async with bridge(cfg) as (url, rt), media_socket(url) as ws:
        leg = Leg(ws)
        await leg.start({"CallSid": leg.call_sid, "From": "+15551230000", "To": "+15559870000"})
        yield leg, rt, await fake.wait_calls(1)


async def test_a_phone_call_through_the_bridge_to_vapi_and_the_assistant_hangs_up(captured_logs: Any) -> None:
    from fakes.twilio_rest import FakeTwilioRest

    twilio = FakeTwilioRest()
    with trio.fail_after(20):
        async with fake_vapi(pace_s=0.002) as fake, twilio.running() as rest_url, \
                bridged_call(fake, rest_url) as (leg, rt, call):
            twilio.add_call(leg.call_sid)
            assert call.body["assistantOverrides"]["variableValues"]["twilioCallSid"] == leg.call_sid
            for f in frames(tone(600) + silence(400)):
                await leg.media(f)
            await leg.collect(until_ms_of_audio=600, idle_s=3)
            assert bytes(leg.audio) == bytes(call.audio_out)  # passthrough, byte for byte
            assert bytes(call.audio_in).startswith(tone(600)[:1600])
            await call.tool_call("end_call")
            with pytest.raises(ConnectionClosed) as closed:
                await leg.collect(idle_s=3)  # the bridge ends the call: the socket closes
            assert closed.value.reason.code == 1000
            while rt.calls:
                await rt.calls_changed.wait()
        await call.closed.wait()
    assert {"type": "end-call"} in call.received
    assert [r.form for r in twilio.requests] == [{"Status": ["completed"]}]
    assert twilio.calls[leg.call_sid].status == "completed"
    (ended,) = captured_logs.events("call.ended")
    assert ended["outcome"] == "agent-hangup" and ended["reason"] == "vapi tool end_call"
    for secret in (API_KEY, call.id, call.ws_url):
        assert secret not in captured_logs.text


async def test_the_assistant_transfers_through_the_bridge_to_fallback_dial(captured_logs: Any) -> None:
    import xml.etree.ElementTree as ET

    from fakes.twilio_rest import FakeTwilioRest

    twilio = FakeTwilioRest()
    with trio.fail_after(20):
        async with fake_vapi(echo=False) as fake, twilio.running() as rest_url, \
                bridged_call(fake, rest_url) as (leg, rt, call):
            twilio.add_call(leg.call_sid)
            await call.tool_call("transfer_to_human", {"to": "call me maybe"}, declares=("to",))  # not E.164: [fallback] dial
            await twilio.recorder.wait_for(lambda: twilio.requests)
            # VAPI then ends its side; that must not turn into a hang-up.
            await call.send_json({"type": "status-update", "status": "ended", "endedReason": "assistant-forwarded-call"})
            with pytest.raises(ConnectionClosed):
                await leg.collect(idle_s=3)
            while rt.calls:
                await rt.calls_changed.wait()
    (req,) = twilio.requests
    assert ET.fromstring(req.form["Twiml"][0]).find("Dial/Number").text == "+15550003333"  # type: ignore[union-attr]
    assert twilio.calls[leg.call_sid].status == "in-progress"  # transferred, never hung up
    (ended,) = captured_logs.events("call.ended")
    assert ended["outcome"] == "transferred"
