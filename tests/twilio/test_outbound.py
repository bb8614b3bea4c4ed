"""twibridge.twilio.outbound: voicemail on outbound calls (Twilio's answering-machine detection).

On a machine, /voice leaves ``[outbound] voicemail_say`` (or hangs up) and no stream, hence
no agent session, is ever opened; a person (or "unknown") gets the agent as before.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from support import bridge, make_config, post_signed, sid
from twibridge.twilio.outbound import answered_by_machine

FORM = {"CallSid": sid("CA", 41), "AccountSid": "AC" + "0" * 32, "From": "+15005550001",
        "To": "+15005550006", "CallStatus": "in-progress", "Direction": "outbound-api", "ApiVersion": "2010-04-01"}


@pytest.mark.parametrize("answered_by, machine", [
    ("machine_end_beep", True), ("machine_end_silence", True), ("machine_end_other", True),
    ("machine_start", True), ("fax", True), ("human", False), ("unknown", False), (None, False), ("", False),
])
def test_which_answers_are_machines(answered_by: str | None, machine: bool) -> None:
    assert answered_by_machine(answered_by) is machine


async def test_a_machine_gets_the_voicemail_and_no_stream(captured_logs) -> None:
    cfg = make_config(outbound={"voicemail_say": "Hi, this is Acme returning your call. Please call us back."})
    async with bridge(cfg) as (url, rt):
        resp = await post_signed(url, "/voice", {**FORM, "AnsweredBy": "machine_end_beep"})
        history = await rt.registry.recent()
    root = ET.fromstring(resp.text)
    assert [c.tag for c in root] == ["Say", "Hangup"]
    assert root.findtext("Say") == "Hi, this is Acme returning your call. Please call us back."
    assert history[0]["call_sid"] == FORM["CallSid"] and history[0]["outcome"] == "voicemail"
    (line,) = captured_logs.events("voice.machine_answered")
    assert line["answered_by"] == "machine_end_beep" and line["outcome"] == "voicemail"
    assert not rt.calls


async def test_a_machine_without_a_message_is_hung_up_on() -> None:
    async with bridge() as (url, rt):
        resp = await post_signed(url, "/voice", {**FORM, "AnsweredBy": "machine_end_silence"})
        history = await rt.registry.recent()
    assert [c.tag for c in ET.fromstring(resp.text)] == ["Hangup"]
    assert history[0]["outcome"] == "machine-hangup"


@pytest.mark.parametrize("answered_by", ["human", "unknown"])
async def test_a_person_gets_the_agent(answered_by: str) -> None:
    async with bridge(make_config(outbound={"voicemail_say": "never heard"})) as (url, _):
        resp = await post_signed(url, "/voice", {**FORM, "AnsweredBy": answered_by})
    root = ET.fromstring(resp.text)
    assert [c.tag for c in root] == ["Connect", "Hangup"]


async def test_an_unsigned_machine_answer_is_still_refused() -> None:
    async with bridge() as (url, rt):
        resp = await post_signed(url, "/voice", {**FORM, "AnsweredBy": "machine_end_beep"}, token="wrong-token")
        history = await rt.registry.recent()
    assert resp.status_code == 403 and history == []
