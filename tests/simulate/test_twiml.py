"""How the simulated Twilio reads TwiML and signs its requests (pure)."""

from __future__ import annotations

import re

import pytest
from twilio.request_validator import RequestValidator

from twibridge.simulate.twiml import TwimlError, new_sid, parse_twiml, sign, voice_params

STREAM = '<Connect><Stream url="wss://bridge.example.com/media-stream" name="tb" ' \
         'statusCallback="https://bridge.example.com/stream-status"><Parameter name="token" value="abc"/>' \
         '<Parameter name="CallSid" value="CA1"/></Stream></Connect>'


def test_connect_stream_with_parameters_and_a_hangup_after() -> None:
    plan = parse_twiml(f'<?xml version="1.0" encoding="UTF-8"?><Response>{STREAM}<Hangup/></Response>')
    assert plan.stream is not None and plan.before == () and plan.warnings == ()
    assert plan.stream.url == "wss://bridge.example.com/media-stream"
    assert plan.stream.status_callback == "https://bridge.example.com/stream-status"
    assert dict(plan.stream.parameters) == {"token": "abc", "CallSid": "CA1"}
    assert [v.kind for v in plan.after] == ["hangup"]


def test_say_then_connect_runs_the_say_first() -> None:
    plan = parse_twiml(f"<Response><Say>Connecting you.</Say>{STREAM}</Response>")
    assert [(v.kind, v.text) for v in plan.before] == [("say", "Connecting you.")]
    assert plan.stream is not None


def test_busy_answer_has_no_stream() -> None:
    plan = parse_twiml("<Response><Say>We are busy.</Say><Dial>+15005550009</Dial></Response>")
    assert plan.stream is None
    assert [(v.kind, v.text) for v in plan.before] == [("say", "We are busy."), ("dial", "+15005550009")]


def test_nothing_runs_after_hangup() -> None:
    plan = parse_twiml(f"<Response><Hangup/>{STREAM}</Response>")
    assert plan.stream is None and [v.kind for v in plan.before] == ["hangup"]


@pytest.mark.parametrize(
    ("twiml", "message"),
    [
        ("not xml at all", "not valid XML"),
        ("<Reply><Hangup/></Reply>", "root element must be <Response>"),
        ("<Response><Pause length='2'/></Response>", "unsupported TwiML verb <Pause>"),
        ("<Response><Gather/></Response>", "unsupported TwiML verb <Gather>"),
        ("<Response><Start><Stream url='wss://x/y'/></Start></Response>", "<Start><Stream> is a one-way"),
        ("<Response><Connect><Conversation/></Connect></Response>", "<Connect> must hold exactly one <Stream>"),
        ("<Response><Connect><Stream/></Connect></Response>", "<Stream> has no url"),
        ("<Response><Connect><Stream url='/relative'/></Connect></Response>", "<Stream url> must be an absolute"),
        (f"<Response>{STREAM}{STREAM}</Response>", "more than one <Connect>"),
        ("<Response><Connect><Stream url='wss://x/y'><Say>hi</Say></Stream></Connect></Response>",
         "<Stream> may hold only <Parameter>"),
    ],
)
def test_refused_twiml_says_why(twiml: str, message: str) -> None:
    with pytest.raises(TwimlError, match="^" + re.escape(message)):
        parse_twiml(twiml)


def test_oversized_twiml_is_refused() -> None:
    with pytest.raises(TwimlError, match="over Twilio's"):
        parse_twiml("<Response>" + "<Say>x</Say>" * 10_000 + "</Response>")


def test_ws_scheme_and_query_string_are_warnings_like_31922() -> None:
    plan = parse_twiml("<Response><Connect><Stream url='ws://h/m?x=1'/></Connect></Response>")
    assert [w[:6] for w in plan.warnings] == ["31922:", "31922:"]
    local = parse_twiml("<Response><Connect><Stream url='ws://127.0.0.1:8080/m'/></Connect></Response>",
                        allow_ws=True)
    assert local.warnings == ()


def test_sids_and_form_fields_look_like_twilio() -> None:
    call_sid, account = new_sid("CA"), new_sid("AC")
    assert len(call_sid) == 34 and call_sid.startswith("CA") and int(call_sid[2:], 16) >= 0
    form = voice_params(call_sid, account, "+15005550006", "+15005550001")
    assert {"AccountSid", "ApiVersion", "CallSid", "CallStatus", "Direction", "From", "To"} <= set(form)
    assert (form["CallStatus"], form["Direction"], form["ApiVersion"]) == ("ringing", "inbound", "2010-04-01")


def test_signatures_match_the_reference_vectors() -> None:
    v2 = {"AccountSid": "AC" + "0" * 32, "ApiVersion": "2010-04-01", "CallSid": "CA" + "1" * 32,
          "CallStatus": "ringing", "Direction": "inbound", "From": "+15005550006", "To": "+15005550001"}
    assert sign("12345", "https://bridge.example.com:8443/voice", v2) == "A1ieiqPd9fp2vtU+O94QgFRkq5o="
    assert sign("12345", "wss://bridge.example.com/twilio/media", {}) == "hGVJmeOLwZmJhPeWsyRDIvgH8Zc="
    assert RequestValidator("12345").validate("wss://bridge.example.com/twilio/media", {},
                                              sign("12345", "wss://bridge.example.com/twilio/media", {}))
