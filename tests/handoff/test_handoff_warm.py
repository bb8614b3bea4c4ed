"""Warm transfer through the real bridge, against the fake Twilio REST API.

The agent (our protocol v1) asks ``transfer{summary}``; the bridge rings the
human through ``Calls.json`` (TwiML, machine detection, a signed status
callback under ``public_url``), holds the caller meanwhile, and then either
joins both legs in one conference or tells the agent nobody answered.  The
fake moves the human's leg only when a test says, and posts the status
callback signed the way Twilio does.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest
import trio
import trio_websocket

from fakes import Recorder
from fakes.hostile_agent import HostileAgent
from fakes.twilio_rest import OWNED_NUMBER, FakeCall, FakeTwilioRest
from support import Leg, bridge, make_config, media_socket, post_signed
from twibridge.audio.tones import hold_tone
from twibridge.handoff import conference, warm
from twibridge.runtime import Runtime
from twibridge.twilio import emulation as emu
from twibridge.twilio import protocol as tw

HUMAN = "+15550004444"
CALLER_NUMBER = "+15557654321"
SUMMARY = "Maria, order 42 arrived broken; she wants a replacement."


class WarmCall:
    """One call's parts; :meth:`listen` reads the stream the whole time, as Twilio does
    (a Twilio side that stops reading is another test's matter)."""

    def __init__(self, agent: HostileAgent, twilio: FakeTwilioRest, leg: Leg, rt: Runtime, url: str) -> None:
        self.agent, self.twilio, self.leg, self.rt, self.url = agent, twilio, leg, rt, url
        self.heard = Recorder()

    async def listen(self) -> None:
        leg = self.leg
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            while True:
                ev = emu.parse_from_bridge(await leg.ws.get_message(), leg.stream_sid)
                leg.received.append(ev)
                if isinstance(ev, tw.OutMedia):
                    leg.audio += ev.payload
                elif isinstance(ev, tw.OutMark):
                    await leg.ws.send_message(emu.build_mark_echo(leg._next(), leg.stream_sid, ev.name))
                self.heard.changed()

    async def human_leg(self) -> FakeCall:
        """The leg the bridge placed to the human (waits for the Calls create)."""
        placed: list[FakeCall] = await self.twilio.recorder.wait_for(self.twilio.placed)
        return placed[0]

    async def hold_audio(self, ms: int = 400) -> bytes:
        """The call's first ``ms`` of audio: what the caller hears while the human is rung."""
        await self.heard.wait_for(lambda: len(self.leg.audio) >= ms * 8)
        return bytes(self.leg.audio[: ms * 8])

    async def ended(self) -> None:
        while self.rt.calls:
            await self.rt.calls_changed.wait()


@asynccontextmanager
async def warm_call(message: dict[str, Any] | None = None, *, n: int = 61,
                    **sections: Any) -> AsyncIterator[WarmCall]:
    """A live call through the real bridge in ``mode = "warm"`` whose agent asks for a transfer."""
    ask = message if message is not None else {"type": "transfer", "summary": SUMMARY}
    agent = HostileAgent(lambda conn: [ask] if conn == 1 else [])
    twilio = FakeTwilioRest()
    transfer = {"mode": "warm", "to": HUMAN, **sections.pop("transfer", {})}
    async with trio.open_nursery() as nursery, twilio.running() as rest_url:
        agent_url = await agent.serve(nursery)

        def config(public_url: str) -> Any:
            return make_config(twilio={"api_base_url": rest_url}, server={"public_url": public_url},
                               agent={"provider": "websocket", "websocket": {"url": agent_url}},
                               transfer=transfer, **sections)

        async with bridge(config("http://placeholder.invalid")) as (url, rt):
            rt.config = config(url)  # the status callback must reach this very server
            async with media_socket(url) as ws:
                leg = Leg(ws, n)
                twilio.add_call(leg.call_sid)
                await leg.start({"CallSid": leg.call_sid, "From": CALLER_NUMBER, "To": OWNED_NUMBER})
                call = WarmCall(agent, twilio, leg, rt, url)
                nursery.start_soon(call.listen)
                yield call
        nursery.cancel_scope.cancel()


async def test_answered_joins_both_legs_in_one_conference_and_ends_as_transferred(captured_logs: Any) -> None:
    with trio.fail_after(30):
        async with warm_call() as c:
            human = await c.human_leg()
            create = c.twilio.requests[-1].form
            assert (create["To"], create["From"], create["MachineDetection"]) == ([HUMAN], [OWNED_NUMBER], ["Enable"])
            assert create["Timeout"] == ["20"] and create["StatusCallbackMethod"] == ["POST"]
            assert set(create["StatusCallbackEvent"]) == {"initiated", "ringing", "answered", "completed"}
            callback = urlsplit(create["StatusCallback"][0])
            assert callback.path == conference.STATUS_PATH and parse_qs(callback.query) == {"call": [c.leg.call_sid]}
            said = ET.fromstring(human.twiml[0])
            assert said.findtext("Say") == f"Transferring a caller from {' '.join(CALLER_NUMBER[1:])}. {SUMMARY}"
            name = conference.conference_name(c.leg.call_sid)
            assert said.findtext("Dial/Conference") == name

            held = await c.hold_audio()  # the caller hears the built-in hold sound
            assert held == hold_tone()[:3200]

            assert await c.twilio.advance(human.sid, "ringing") == 204
            assert await c.twilio.advance(human.sid, "in-progress", "human") == 204
            caller = c.twilio.calls[c.leg.call_sid]
            await c.twilio.recorder.wait_for(lambda: caller.twiml)
            assert ET.fromstring(caller.twiml[0]).findtext("Dial/Conference") == name
            assert c.twilio.conferences == {name: [human.sid, c.leg.call_sid]}
            await c.leg.stop()  # Twilio ends the stream: the call's TwiML moved on
            await c.ended()
    (ended,) = captured_logs.events("call.ended")
    assert ended["outcome"] == "transferred"
    (attempt,) = ended["transfers"]
    assert attempt["mode"] == "warm" and attempt["to"] == HUMAN and attempt["outcome"] == "answered"
    assert [r.form.get("Status") for r in c.twilio.requests if r.path.endswith(f"{human.sid}.json")] == []
    assert SUMMARY not in captured_logs.text  # the caller's business is not logged
    assert [e["delivered"] for e in captured_logs.events("transfer.status")] == [True, True]


@pytest.mark.parametrize(("status", "answered_by", "outcome", "told"), [
    ("no-answer", "", "no-answer", "nobody answered"),
    ("busy", "", "busy", "the line was busy"),
    ("failed", "", "failed", "could not be placed"),
    ("in-progress", "machine_start", "machine", "a voicemail answered"),
])
async def test_nobody_answered_stops_the_hold_and_tells_the_agent(status: str, answered_by: str, outcome: str,
                                                                  told: str, captured_logs: Any) -> None:
    with trio.fail_after(30):
        async with warm_call() as c:
            human = await c.human_leg()
            await c.hold_audio(100)
            await c.twilio.advance(human.sid, status, answered_by)
            (failed,) = await c.agent.wait_for(lambda: c.agent.of_type("transfer_failed"))
            assert told in failed["reason"] and f"({outcome})" in failed["reason"]
            await c.heard.wait_for(lambda: any(isinstance(e, tw.OutClear) for e in c.leg.received))  # hold stopped
            assert list(c.rt.calls) == [c.leg.call_sid]  # the call goes on with the agent
            assert c.twilio.calls[c.leg.call_sid].twiml == []  # the caller was never moved
            await c.leg.stop()
            await c.ended()
    (ended,) = captured_logs.events("call.ended")
    assert ended["outcome"] == "completed" and ended["transfers"][0]["outcome"] == outcome
    # A machine that answered is hung up (Twilio's "canceled" does nothing once answered).
    ends = [r.form["Status"][0] for r in c.twilio.requests if r.path.endswith(f"{human.sid}.json")]
    assert ends == (["completed"] if status == "in-progress" else [])


async def test_ring_timeout_cancels_the_ringing_leg(autojump_clock: Any, captured_logs: Any) -> None:
    """Nobody says anything (no callback): the bridge's own deadline ends it, and the phone stops ringing."""
    with trio.fail_after(300):
        async with warm_call(transfer={"ring_timeout_s": 5}) as c:
            human = await c.human_leg()
            await c.twilio.advance(human.sid, "ringing")
            (failed,) = await c.agent.wait_for(lambda: c.agent.of_type("transfer_failed"), timeout=60)
            assert "(ring-timeout)" in failed["reason"]
            assert c.twilio.calls[human.sid].status == "canceled"
            polls = [r for r in c.twilio.requests if r.method == "GET"]
            assert len(polls) >= (5 + warm.AMD_TIMEOUT_S) // warm.POLL_S - 1  # it kept asking itself
            await c.leg.stop()
            await c.ended()
    assert captured_logs.events("call.ended")[0]["transfers"][0]["outcome"] == "ring-timeout"


async def test_a_poll_finds_the_answer_when_the_callback_went_elsewhere(autojump_clock: Any) -> None:
    """The leg's callback can land on another worker or host: the bridge reads the leg's status itself."""
    with trio.fail_after(300):
        async with warm_call() as c:
            human = await c.human_leg()
            human.status_callback = ""  # Twilio posts nothing here
            await c.twilio.advance(human.sid, "in-progress", "human")
            caller = c.twilio.calls[c.leg.call_sid]
            await c.twilio.recorder.wait_for(lambda: caller.twiml, timeout=60)
            assert ET.fromstring(caller.twiml[0]).findtext("Dial/Conference") == conference.conference_name(
                c.leg.call_sid)
            await c.leg.stop()


@pytest.mark.parametrize("fail_at", ["create", "join"])
async def test_rest_5xx_is_a_failed_result_and_leaves_no_phone_ringing(fail_at: str, captured_logs: Any) -> None:
    with trio.fail_after(30):
        async with warm_call() as c:
            human: FakeCall | None = None
            if fail_at == "create":
                c.twilio.fail_next = (503, {"code": 20500, "message": "Service Unavailable", "status": 503})
            else:
                human = await c.human_leg()
                c.twilio.fail_next = (500, {"code": 20500, "message": "Internal Server Error", "status": 500})
                await c.twilio.advance(human.sid, "in-progress", "human")
            (failed,) = await c.agent.wait_for(lambda: c.agent.of_type("transfer_failed"))
            assert failed["reason"] == "transfer failed at Twilio"
            if human is not None:  # the human answered but could not be joined: hung up, not left waiting
                await c.twilio.recorder.wait_for(lambda: human.status == "completed")
            await c.leg.stop()
            await c.ended()
    errors = captured_logs.events("transfer.ring_failed" if fail_at == "create" else "transfer.join_failed")
    assert errors and "HTTP 50" in errors[0]["error"] and "test-auth-token" not in str(errors[0])
    assert captured_logs.events("call.ended")[0]["transfers"][0]["outcome"] == "rest-error"


async def test_status_callbacks_are_signed_and_checked_like_voice(captured_logs: Any) -> None:
    with trio.fail_after(30):
        async with warm_call() as c:
            human = await c.human_leg()
            path = f"{conference.STATUS_PATH}?call={c.leg.call_sid}"
            form = {"AccountSid": c.twilio.account_sid, "CallSid": human.sid, "CallStatus": "in-progress",
                    "AnsweredBy": "human"}
            unsigned = await post_signed(c.url, path, form, signature="")
            forged = await post_signed(c.url, path, form, token="not-the-auth-token")
            assert (unsigned.status_code, forged.status_code) == (403, 403)
            assert c.twilio.calls[c.leg.call_sid].twiml == []  # neither moved the caller
            other = await post_signed(c.url, path, {**form, "CallSid": "CA" + "9" * 32})  # not this call's leg
            assert other.status_code == 204
            assert [e["delivered"] for e in captured_logs.events("transfer.status")] == [False]
            assert c.twilio.calls[c.leg.call_sid].twiml == []
            assert await c.twilio.advance(human.sid, "in-progress", "human") == 204  # the real one, signed
            await c.twilio.recorder.wait_for(lambda: c.twilio.calls[c.leg.call_sid].twiml)
            await c.leg.stop()
    assert len(captured_logs.events("http.bad_signature")) == 2


async def test_the_caller_hanging_up_while_on_hold_stops_the_human_phone(captured_logs: Any) -> None:
    with trio.fail_after(30):
        async with warm_call() as c:
            human = await c.human_leg()
            await c.twilio.advance(human.sid, "ringing")
            await c.leg.stop()
            await c.ended()
    assert human.status == "canceled"
    (ended,) = captured_logs.events("call.ended")
    assert ended["outcome"] == "completed" and ended["transfers"][0]["outcome"] == "caller-hung-up"


async def test_a_hold_sound_from_config_and_the_agents_audio_held_back(tmp_path: Any) -> None:
    """``hold_sound`` loops to the caller; what the agent says meanwhile is held back."""
    import wave

    from support import tone
    from twibridge.audio.g711 import ulaw_to_pcm16
    from twibridge.audio.wavfile import load_caller_audio

    path = tmp_path / "hold.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(ulaw_to_pcm16(tone(300, freq=330.0)))
    sound = load_caller_audio(str(path)).ulaw
    with trio.fail_after(30):
        async with warm_call(transfer={"hold_sound": str(path)}) as c:
            human = await c.human_leg()
            held = await c.hold_audio(500)  # 300 ms of sound, looped
            assert held == (sound + sound)[:4000]
            assert human.status == "queued"
            await c.leg.stop()


async def test_refused_target_and_missing_dialled_number_reach_the_agent(captured_logs: Any) -> None:
    with trio.fail_after(30):
        async with warm_call({"type": "transfer", "to": "+19005550000"}) as c:
            (failed,) = await c.agent.wait_for(lambda: c.agent.of_type("transfer_failed"))
            assert "not in [transfer] allow" in failed["reason"]
            assert c.twilio.placed() == []
            await c.leg.stop()
    assert captured_logs.events("call.ended")[0]["transfers"][0]["outcome"] == "refused"


async def test_the_caller_talking_over_the_hold_sound_neither_cuts_it_nor_reaches_the_agent() -> None:
    from support import frames, tone

    with trio.fail_after(30):
        async with warm_call() as c:
            human = await c.human_leg()
            await c.hold_audio(100)
            before = c.agent.audio_frames
            for frame in frames(tone(600)):  # speech-loud: a barge-in anywhere else
                await c.leg.media(frame)
            await c.hold_audio(1200)
            assert not any(isinstance(e, tw.OutClear) for e in c.leg.received)
            assert c.agent.audio_frames == before  # the agent is on hold too
            await c.twilio.advance(human.sid, "in-progress", "human")
            await c.twilio.recorder.wait_for(lambda: c.twilio.calls[c.leg.call_sid].twiml)
            await c.leg.stop()


async def test_after_a_failed_transfer_the_caller_reaches_the_agent_again() -> None:
    from support import frames, tone

    with trio.fail_after(30):
        async with warm_call() as c:
            human = await c.human_leg()
            await c.twilio.advance(human.sid, "busy")
            await c.agent.wait_for(lambda: c.agent.of_type("transfer_failed"))
            before = c.agent.audio_frames
            for frame in frames(tone(200)):
                await c.leg.media(frame)
            await c.agent.wait_for(lambda: c.agent.audio_frames >= before + 10)
            await c.leg.stop()
