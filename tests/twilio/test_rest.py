"""twibridge.twilio.rest against the fake Twilio REST API on 127.0.0.1."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
import trio

from fakes.twilio_rest import ACCOUNT_SID, AUTH_TOKEN, OWNED_NUMBER, FakeTwilioRest, twilio_error
from twibridge.config import Config, build_config
from twibridge.twilio.rest import TwilioRest, TwilioRestError, transfer_twiml

CUSTOMER = "+15557654321"


def rest_config(url: str, **twilio: Any) -> Config:
    return build_config({"twilio": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "api_base_url": url,
                                    "rest_timeout_s": 5, "from_number": OWNED_NUMBER, **twilio}})


@asynccontextmanager
async def fake_rest(**twilio: Any) -> AsyncIterator[tuple[FakeTwilioRest, TwilioRest]]:
    fake = FakeTwilioRest()
    with trio.fail_after(10):
        async with fake.running() as url:
            yield fake, TwilioRest(rest_config(url, **twilio))


# -- hang up --------------------------------------------------------------------------------


async def test_hangup_completes_a_live_call() -> None:
    async with fake_rest() as (fake, rest):
        sid = fake.add_call()
        assert await rest.hangup(sid) is True
        req = fake.requests[-1]
        assert req.authorized and req.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json"
        assert req.form == {"Status": ["completed"]}
        assert fake.calls[sid].status == "completed"


async def test_hangup_of_an_ended_or_unknown_call_is_success() -> None:
    async with fake_rest() as (fake, rest):
        sid = fake.add_call()
        assert await rest.hangup(sid) is True
        assert await rest.hangup(sid) is False  # 404 / 20404: already ended
        assert await rest.hangup("CA" + "9" * 32) is False
        assert [r.status for r in fake.requests] == [200, 404, 404]


async def test_hangup_on_a_subaccount_call_uses_its_account() -> None:
    async with fake_rest() as (fake, rest):
        sub = "AC" + "5" * 32
        assert await rest.hangup(fake.add_call(), account_sid=sub) is False  # the fake knows no subaccounts
        assert fake.requests[-1].path.startswith(f"/2010-04-01/Accounts/{sub}/Calls/")


# -- transfer ----------------------------------------------------------------------------------


async def test_transfer_replaces_the_twiml_with_say_and_dial_number() -> None:
    async with fake_rest() as (fake, rest):
        sid = fake.add_call()
        await rest.transfer(sid, CUSTOMER, say="Connecting you <now> & thanks")
        (twiml,) = fake.requests[-1].form["Twiml"]
        root = ET.fromstring(twiml)
        assert [child.tag for child in root] == ["Say", "Dial"]
        assert root.find("Say").text == "Connecting you <now> & thanks"  # type: ignore[union-attr]
        assert root.find("Dial/Number").text == CUSTOMER  # type: ignore[union-attr]
        assert set(fake.requests[-1].form) == {"Twiml"}
        assert fake.calls[sid].twiml == [twiml]


async def test_transfer_without_say_dials_at_once() -> None:
    async with fake_rest() as (fake, rest):
        await rest.transfer(fake.add_call(), CUSTOMER)
        root = ET.fromstring(fake.requests[-1].form["Twiml"][0])
        assert [child.tag for child in root] == ["Dial"]


async def test_transfer_of_an_ended_call_says_not_found() -> None:
    async with fake_rest() as (fake, rest):
        with pytest.raises(TwilioRestError) as info:
            await rest.transfer("CA" + "9" * 32, CUSTOMER)
        assert info.value.not_found and info.value.status == 404 and info.value.code == 20404


@pytest.mark.parametrize("bad", ["", "5551234", "+1 555 123 4567", "sip:x@y", "+1555<Hangup/>"])
async def test_transfer_to_a_bad_number_is_refused_before_sending(bad: str) -> None:
    async with fake_rest() as (fake, rest):
        with pytest.raises(TwilioRestError, match="E.164") as info:
            await rest.transfer(fake.add_call(), bad)
        assert info.value.status is None and not fake.requests


def test_transfer_twiml_is_plain_twilio_twiml() -> None:
    assert transfer_twiml(CUSTOMER) == ('<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Number>'
                                        f"{CUSTOMER}</Number></Dial></Response>")


# -- outbound ------------------------------------------------------------------------------------


async def test_create_call_fields_and_sid() -> None:
    async with fake_rest() as (fake, rest):
        sid = await rest.create_call(CUSTOMER, OWNED_NUMBER, url="https://bridge.example.com/voice",
                                     status_callback="https://bridge.example.com/call-status", ring_timeout_s=30)
        req = fake.requests[-1]
        assert req.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json" and req.status == 201
        assert req.form == {
            "To": [CUSTOMER], "From": [OWNED_NUMBER], "Url": ["https://bridge.example.com/voice"],
            "Method": ["POST"], "StatusCallback": ["https://bridge.example.com/call-status"],
            "StatusCallbackMethod": ["POST"],
            "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"], "Timeout": ["30"],
        }
        assert sid in fake.calls and fake.calls[sid].to == CUSTOMER


async def test_create_call_minimal_form() -> None:
    async with fake_rest() as (fake, rest):
        await rest.create_call(CUSTOMER, OWNED_NUMBER, url="https://bridge.example.com/voice")
        assert set(fake.requests[-1].form) == {"To", "From", "Url", "Method"}


async def test_create_call_refused_by_twilio_keeps_its_code() -> None:
    async with fake_rest() as (fake, rest):
        with pytest.raises(TwilioRestError, match="21210.*not verified") as info:
            await rest.create_call(CUSTOMER, "+15550009999", url="https://bridge.example.com/voice")
        assert info.value.status == 400 and info.value.code == 21210 and not info.value.retryable


# -- errors --------------------------------------------------------------------------------------


async def test_bad_credentials_are_a_clear_error_without_the_token(captured_logs: Any) -> None:
    async with fake_rest(auth_token="wrong-token-0123456789abcdef") as (fake, rest):
        with pytest.raises(TwilioRestError) as info:
            await rest.hangup(fake.add_call())
        err = info.value
        assert err.status == 401 and err.code == 20003 and not err.retryable
        assert "twilio.auth_token" in str(err)
        assert "wrong-token" not in str(err) and "wrong-token" not in captured_logs.text
        assert not fake.requests[-1].authorized


async def test_twilio_server_errors_are_retryable() -> None:
    async with fake_rest() as (fake, rest):
        fake.fail_next = twilio_error(503, 20500, "Service Unavailable")
        with pytest.raises(TwilioRestError, match="503") as info:
            await rest.hangup(fake.add_call())
        assert info.value.retryable and not info.value.not_found


async def test_slow_twilio_times_out() -> None:
    async with fake_rest(rest_timeout_s=0.2) as (fake, rest):
        fake.delay_s = 0.6
        start = trio.current_time()
        with pytest.raises(TwilioRestError, match="timed out after 0.2s") as info:
            await rest.hangup(fake.add_call())
        assert trio.current_time() - start < 0.5
        assert info.value.status is None and info.value.retryable


async def test_unreachable_twilio_is_an_error_not_a_crash() -> None:
    rest = TwilioRest(rest_config("http://127.0.0.1:1"))
    with trio.fail_after(10), pytest.raises(TwilioRestError, match="unreachable") as info:
        await rest.hangup("CA" + "1" * 32)
    assert info.value.retryable


async def test_bad_sids_and_missing_credentials_are_refused_before_sending() -> None:
    async with fake_rest() as (fake, rest):
        with pytest.raises(TwilioRestError, match="not a CallSid"):
            await rest.hangup("CA123/../../Calls")
        with pytest.raises(TwilioRestError, match="account_sid"):
            await rest.hangup(fake.add_call(), account_sid="AC../x")
        no_token = TwilioRest(rest_config("http://127.0.0.1:1", auth_token=""))
        with pytest.raises(TwilioRestError, match="auth_token"):
            await no_token.hangup(fake.add_call())
        assert not fake.requests
        assert no_token.problems() == [
            "twilio.auth_token: required for Twilio REST calls (env TWIBRIDGE_TWILIO_AUTH_TOKEN)"]
        assert rest.problems() == []


async def test_update_twiml_replaces_the_calls_twiml() -> None:
    async with fake_rest() as (fake, rest):
        sid = fake.add_call()
        await rest.update_twiml(sid, "<Response><Say>Sorry</Say><Hangup/></Response>")
        assert fake.requests[-1].form == {"Twiml": ["<Response><Say>Sorry</Say><Hangup/></Response>"]}
        with pytest.raises(TwilioRestError) as info:
            await rest.update_twiml("CA" + "9" * 32, "<Response/>")
        assert info.value.not_found


# -- a warm transfer's human leg (issue #21) ---------------------------------------------------


async def test_create_call_with_twiml_and_quick_machine_detection() -> None:
    async with fake_rest() as (fake, rest):
        sid = await rest.create_call(CUSTOMER, OWNED_NUMBER, twiml="<Response><Say>hi</Say></Response>",
                                     status_callback="https://bridge.example.com/transfer-status?call=CA1",
                                     machine_detection=True, detect_message_end=False,
                                     machine_detection_timeout_s=8)
        form = fake.requests[-1].form
        assert form["Twiml"] == ["<Response><Say>hi</Say></Response>"] and "Url" not in form
        assert (form["MachineDetection"], form["MachineDetectionTimeout"]) == (["Enable"], ["8"])
        assert fake.calls[sid].twiml == ["<Response><Say>hi</Say></Response>"]
        with pytest.raises(TwilioRestError, match="exactly one of url and twiml"):
            await rest.create_call(CUSTOMER, OWNED_NUMBER)
        with pytest.raises(TwilioRestError, match="exactly one of url and twiml"):
            await rest.create_call(CUSTOMER, OWNED_NUMBER, url="https://x/voice", twiml="<Response/>")


async def test_call_status_reads_the_resource() -> None:
    async with fake_rest() as (fake, rest):
        sid = await rest.create_call(CUSTOMER, OWNED_NUMBER, twiml="<Response/>")
        assert await rest.call_status(sid) == ("queued", "")
        await fake.advance(sid, "in-progress", "machine_start")
        assert await rest.call_status(sid) == ("in-progress", "machine_start")
        assert fake.requests[-1].method == "GET"
        with pytest.raises(TwilioRestError) as info:
            await rest.call_status("CA" + "9" * 32)
        assert info.value.not_found


@pytest.mark.parametrize(("status", "answered", "sent", "final"), [
    ("ringing", False, ["canceled"], "canceled"),
    ("in-progress", False, ["canceled", "completed"], "completed"),  # canceled does nothing once answered
    ("in-progress", True, ["completed"], "completed"),
])
async def test_end_leg_cancels_a_ringing_call_and_hangs_up_an_answered_one(
        status: str, answered: bool, sent: list[str], final: str) -> None:
    async with fake_rest() as (fake, rest):
        sid = await rest.create_call(CUSTOMER, OWNED_NUMBER, twiml="<Response/>")
        await fake.advance(sid, status)
        await rest.end_leg(sid, answered=answered)
        assert [r.form["Status"][0] for r in fake.requests if "Status" in r.form] == sent
        assert fake.calls[sid].status == final
        await rest.end_leg(sid, answered=True)  # already ended: done, no error
