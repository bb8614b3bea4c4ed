"""The door of every call (twibridge.call.admission), attacked through a real server on loopback:
replayed /voice webhooks and stream tokens, moved form boundaries, foreign accounts, streams that
never start, unknown events, max_calls at start, hostile From/To."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import trio
import trio_websocket

from process_support import ServerProcess, base_env
from redis_support import RedisServer, needs_redis, redis_server  # noqa: F401 (fixture)
from support import ACCOUNT_SID, TOKEN, Leg, bridge, make_config, media_socket, post_signed, sid, wait_calls
from twibridge.call import admission
from twibridge.twilio import emulation as emu
from twibridge.twilio import stream_token

CALL = sid("CA", 42)
VOICE = {"CallSid": CALL, "AccountSid": ACCOUNT_SID, "From": "+15005550006", "To": "+15005550001",
         "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}


async def voice(url: str, form: dict[str, str] = VOICE) -> tuple[list[str], dict[str, str]]:
    """POST the signed webhook: the TwiML verbs and the <Parameter>s it carries."""
    resp = await post_signed(url, "/voice", form)
    assert resp.status_code == 200, resp.text
    root = ET.fromstring(resp.text)
    return [c.tag for c in root], {str(p.get("name")): str(p.get("value")) for p in root.iter("Parameter")}


async def refused(ws: trio_websocket.WebSocketConnection) -> int | None:
    """The close code the bridge ends this stream with (it must close it, within 5 s)."""
    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
        with trio.fail_after(5):
            while True:
                await ws.get_message()
    return closed.value.reason.code


def outcome(rt: Any, name: str) -> float:
    return float(rt.metrics.calls.labels(outcome=name)._value.get())


# ------------------------------------------------------------------ item 2: replays


async def test_a_replayed_voice_and_a_finished_calls_token_open_nothing(captured_logs: Any) -> None:
    async with bridge() as (url, rt):
        verbs, params = await voice(url)
        assert verbs == ["Connect", "Hangup"]
        async with media_socket(url) as ws:
            leg = Leg(ws, 42)
            await leg.start(params, token=False)  # customParameters exactly as the TwiML put them
            await wait_calls(rt, 1)
            await leg.stop()
        await wait_calls(rt, 0)
        # the captured webhook, replayed after the call: the refusal TwiML, no new token
        verbs, again = await voice(url)
        assert verbs == ["Say", "Hangup"] and stream_token.PARAMETER not in again
        assert captured_logs.events("voice.replay_refused")[0]["call_sid"] == CALL
        # the finished call's token, within its TTL, on a second stream
        async with media_socket(url) as ws:
            await Leg(ws, 42).start(params, token=False)
            assert await refused(ws) == 1008
        assert rt.calls == {}
        assert outcome(rt, "refused_unsigned") == 1 and outcome(rt, "refused_duplicate") == 1
    assert captured_logs.events("ws.stream_token_reused")
    assert [e["outcome"] for e in captured_logs.events("call.ended")] == ["completed"]


async def test_twilios_retries_of_an_unanswered_voice_still_work() -> None:
    async with bridge() as (url, rt):
        first = await voice(url)
        retry = await voice(url)  # Twilio did not get the first answer: it asks again
        assert first[0] == retry[0] == ["Connect", "Hangup"]
        async with media_socket(url) as ws:
            leg = Leg(ws, 42)
            await leg.start(retry[1], token=False)  # the stream comes from the answer Twilio got
            await wait_calls(rt, 1)
            # the other answer's token cannot open a second stream for the call
            async with media_socket(url) as ws2:
                await Leg(ws2, 42).start(first[1], token=False)
                assert await refused(ws2) == 1008
            assert list(rt.calls) == [CALL]
            await leg.stop()
        await wait_calls(rt, 0)
        assert (await voice(url))[0] == ["Say", "Hangup"]  # streamed: no more answers


async def test_moving_a_key_value_boundary_under_the_same_signature_is_refused(captured_logs: Any) -> None:
    """``CallSid=CA…`` + ``CallStatus=ringing`` signs like ``CallSid=CA…CallStatusringing``."""
    moved = {k: v for k, v in VOICE.items() if k != "CallStatus"} | {"CallSid": CALL + "CallStatusringing"}
    async with bridge() as (url, _):
        resp = await post_signed(url, "/voice", moved)
        bad_account = await post_signed(url, "/voice", VOICE | {"AccountSid": "AC" + "0" * 31 + "G"})
    assert resp.status_code == bad_account.status_code == 400
    assert stream_token.PARAMETER not in resp.text
    assert len(captured_logs.events("voice.bad_sid")) == 2


@pytest.mark.parametrize("tamper", [
    {"From": "+19005551234"}, {"To": "+19005551234"}, {"agent": "admin"}, {"drop": "To"},
])
async def test_start_parameters_must_match_what_voice_signed(tamper: dict[str, str], captured_logs: Any) -> None:
    async with bridge() as (url, rt):
        _, params = await voice(url)
        if "drop" in tamper:
            params.pop(tamper["drop"])
        else:
            params.update(tamper)
        async with media_socket(url) as ws:
            await Leg(ws, 42).start(params, token=False)
            assert await refused(ws) == 1008
        assert rt.calls == {} and outcome(rt, "refused_unsigned") == 1
    assert "does not match this call" in captured_logs.events("ws.bad_stream_token")[0]["reason"]


# ------------------------------------------------------------------ item 7: accounts


async def test_a_start_naming_another_account_is_refused(captured_logs: Any) -> None:
    other = "AC" + "1" * 32
    async with bridge() as (url, rt):
        async with media_socket(url) as ws:
            leg = Leg(ws, 5)
            await ws.send_message(emu.build_connected())
            # a token minted for that account would do no better: the account itself is refused
            custom = {"CallSid": leg.call_sid}
            custom[stream_token.PARAMETER] = stream_token.issue(
                TOKEN, account_sid=other, call_sid=leg.call_sid, params=custom, now=time.time())
            await ws.send_message(emu.build_start(1, leg.stream_sid, other, leg.call_sid, custom))
            assert await refused(ws) == 1008
        assert rt.calls == {}
    assert captured_logs.events("ws.foreign_account")[0]["account_sid"] == other


# ------------------------------------------------------------------ item 6: before start


async def test_sockets_that_never_start_are_capped_apart_and_do_not_make_calls_busy(captured_logs: Any) -> None:
    cfg = make_config(server={"max_calls": 2})
    async with bridge(cfg) as (url, rt):
        async with trio.open_nursery() as nursery:
            opened, refused_upgrades = 0, 0
            hold = trio.Event()
            done_send, done_recv = trio.open_memory_channel[None](100)

            async def idle_socket() -> None:
                nonlocal opened, refused_upgrades
                try:
                    async with media_socket(url):
                        opened += 1
                        await done_send.send(None)
                        await hold.wait()
                except trio_websocket.HandshakeError:  # 503: too many sockets before start
                    refused_upgrades += 1
                    await done_send.send(None)

            n = admission.PRESTART_MAX_PER_ADDRESS + 4
            with trio.fail_after(10):
                for _ in range(n):
                    nursery.start_soon(idle_socket)
                for _ in range(n):
                    await done_recv.receive()
            assert opened == admission.PRESTART_MAX_PER_ADDRESS and refused_upgrades == 4
            assert rt.calls == {}
            # they are no calls: with max_calls = 2, a genuine /voice is still answered
            verbs, _ = await voice(url)
            assert verbs == ["Connect", "Hangup"]
            hold.set()
    assert captured_logs.events("ws.prestart_full")


async def test_no_start_within_the_timeout_closes_the_socket() -> None:
    async with bridge() as (url, rt):
        async with media_socket(url) as ws:
            t0 = trio.current_time()
            await ws.send_message(emu.build_connected())
            assert await refused(ws) == 1008
            assert trio.current_time() - t0 < admission.START_TIMEOUT_S + 1.5
        assert rt.pending == 0


async def test_unknown_events_before_start_close_the_socket_and_after_it_are_logged_once(captured_logs: Any) -> None:
    async with bridge() as (url, rt):
        async with media_socket(url) as ws:
            await ws.send_message(emu.build_connected())
            await ws.send_message(json.dumps({"event": "flood", "streamSid": "MZ" + "0" * 32}))
            assert await refused(ws) == 1008
        async with media_socket(url) as ws:
            leg = Leg(ws, 3)
            await leg.start()
            for _ in range(500):
                await ws.send_message(json.dumps({"event": "flood", "streamSid": leg.stream_sid}))
            await leg.stop()
        await wait_calls(rt, 0)
    assert len(captured_logs.events("call.unknown_event")) == 1
    (ended,) = captured_logs.events("call.ended")
    assert ended["unknown_events"] == 500


# ------------------------------------------------------------------ item 9: max_calls at start


async def test_answered_voice_webhooks_reserve_their_slots() -> None:
    async with bridge(make_config(server={"max_calls": 2})) as (url, rt):
        answers = [await voice(url, VOICE | {"CallSid": sid("CA", n)}) for n in range(4)]
        assert [a[0][0] for a in answers] == ["Connect", "Connect", "Say", "Say"]  # 2 reserved: full
        async with media_socket(url) as ws0, media_socket(url) as ws1:
            await Leg(ws0, 0).start(answers[0][1], token=False)
            await Leg(ws1, 1).start(answers[1][1], token=False)
            await wait_calls(rt, 2)


async def test_max_calls_is_checked_again_at_start(captured_logs: Any) -> None:
    """Without tokens (streams from other TwiML) nothing reserves: start refuses the third with 1013."""
    cfg = make_config(server={"max_calls": 2}, twilio={"require_stream_token": False})
    async with bridge(cfg) as (url, rt):
        async with media_socket(url) as ws1, media_socket(url) as ws2, media_socket(url) as ws3:
            await Leg(ws1, 1).start(token=False)
            await Leg(ws2, 2).start(token=False)
            await wait_calls(rt, 2)
            await Leg(ws3, 3).start(token=False)
            assert await refused(ws3) == admission.CLOSE_TRY_AGAIN
            assert sorted(rt.calls) == [sid("CA", 1), sid("CA", 2)]
        assert outcome(rt, "refused_busy") == 1
    assert captured_logs.events("call.full_at_start")


# ------------------------------------------------------------------ item 11: identity at start


@pytest.mark.parametrize(("field", "value"), [
    ("CallSid", "CA" + "0" * 31 + "Z"), ("CallSid", "CAxyz"), ("AccountSid", "AC123"),
    ("From", "[/]\x1b[31m"), ("To", "+1" * 100),
])
async def test_malformed_sids_and_parties_are_refused_at_start(field: str, value: str, captured_logs: Any) -> None:
    cfg = make_config(twilio={"require_stream_token": False, "account_sid": ""})
    async with bridge(cfg) as (url, rt):
        async with media_socket(url) as ws:
            leg = Leg(ws, 9)
            call_sid = value if field == "CallSid" else leg.call_sid
            account = value if field == "AccountSid" else ACCOUNT_SID
            custom = {"CallSid": call_sid} | ({field: value} if field in ("From", "To") else {})
            await ws.send_message(emu.build_connected())
            await ws.send_message(emu.build_start(1, leg.stream_sid, account, call_sid, custom))
            assert await refused(ws) == 1008
        assert rt.calls == {}
    assert captured_logs.events("call.bad_peer_data")


# ------------------------------------------------------------------ item 2, cluster-wide (Redis)


@needs_redis
@pytest.mark.redis
async def test_replays_are_refused_on_every_instance_sharing_redis(redis_server: RedisServer) -> None:
    env = base_env(TWIBRIDGE_STATE_BACKEND="redis", TWIBRIDGE_STATE_REDIS_URL=redis_server.url,
                   TWIBRIDGE_STATE_TIMEOUT_S="0.5", TWIBRIDGE_TWILIO_ACCOUNT_SID=ACCOUNT_SID)
    with trio.fail_after(45):
        async with trio.open_nursery() as nursery:
            a, b = ServerProcess(env), ServerProcess(env)
            try:
                await a.start(nursery)
                await b.start(nursery)
                verbs, params = await voice(a.url)
                assert verbs == ["Connect", "Hangup"]
                async with media_socket(a.url) as ws:
                    leg = Leg(ws, 42)
                    await leg.start(params, token=False)
                    await a.calls_started(1)
                    await leg.stop()
                    await a.wait_for(lambda l: l.get("event") == "call.ended")
                assert (await voice(b.url))[0] == ["Say", "Hangup"]  # the replay, at the other instance
                async with media_socket(b.url) as ws:  # the used token, at the other instance
                    await Leg(ws, 42).start(params, token=False)
                    assert await refused(ws) == 1008
                await b.wait_for(lambda l: l.get("event") == "ws.stream_token_reused")
                assert not b.events("call.started")
            finally:
                for sp in (a, b):
                    with trio.CancelScope(shield=True):
                        if sp.proc is not None:
                            await sp.stop(timeout=5)
