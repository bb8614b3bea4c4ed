"""Sans-IO Media Streams codec: bytes in, events out; events in, exact text out (h11 style)."""

from __future__ import annotations

import base64
import json

import pytest

from twibridge.twilio import emulation as emu
from twibridge.twilio import protocol as tw

SID = "MZ" + "1" * 32
CALL = "CA" + "2" * 32
ACCT = "AC" + "3" * 32
FRAME = bytes(range(160))


def test_parse_every_twilio_event() -> None:
    assert tw.parse_from_twilio(emu.build_connected()) == tw.Connected("Call", "1.0.0")
    start = tw.parse_from_twilio(emu.build_start(1, SID, ACCT, CALL, {"From": "+1555"}))
    assert isinstance(start, tw.Start)
    assert (start.sequence_number, start.stream_sid, start.call_sid, start.account_sid) == (1, SID, CALL, ACCT)
    assert start.custom_parameters == {"From": "+1555"}
    assert (start.encoding, start.sample_rate, start.channels) == ("audio/x-mulaw", 8000, 1)
    media = tw.parse_from_twilio(emu.build_inbound_media(2, SID, 1, 0, FRAME))
    assert media == tw.Media(2, SID, "inbound", 1, 0, FRAME)
    assert tw.parse_from_twilio(emu.build_dtmf(3, SID, "#")) == tw.Dtmf(3, SID, "#")
    assert tw.parse_from_twilio(emu.build_mark_echo(4, SID, "g0:1:100")) == tw.Mark(4, SID, "g0:1:100")
    assert tw.parse_from_twilio(emu.build_stop(5, SID, ACCT, CALL)) == tw.Stop(5, SID, ACCT, CALL)


def test_numeric_fields_arrive_as_strings_and_become_ints() -> None:
    raw = json.loads(emu.build_inbound_media(7, SID, 6, 100, FRAME))
    assert raw["sequenceNumber"] == "7" and raw["media"]["chunk"] == "6" and raw["media"]["timestamp"] == "100"
    ev = tw.parse_from_twilio(json.dumps(raw))
    assert isinstance(ev, tw.Media) and (ev.sequence_number, ev.chunk, ev.timestamp) == (7, 6, 100)


def test_unknown_event_is_not_an_error() -> None:
    assert tw.parse_from_twilio('{"event": "future-thing"}') == tw.Unknown("future-thing")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b'{"event":"media"}', "binary frame"),
        ("{not json", "malformed JSON"),
        ("[1,2]", "not a JSON object"),
        ('{"event": 3}', "'event'"),
        ('{"event":"media","sequenceNumber":"1","streamSid":"MZ","media":{"chunk":"1","timestamp":"0",'
         '"payload":"!!!"}}', "base64"),
        ('{"event":"media","sequenceNumber":"x","streamSid":"MZ","media":{"chunk":"1","timestamp":"0",'
         '"payload":""}}', "sequenceNumber"),
        ('{"event":"media","sequenceNumber":true,"streamSid":"MZ","media":{}}', "boolean"),
        ('{"event":"start","sequenceNumber":"1","streamSid":"MZ","start":"nope"}', "'start'"),
        ("x" * (tw.MAX_MESSAGE_BYTES + 1), "too large"),
    ],
)
def test_bad_frames_raise_remote_protocol_error(text: str | bytes, reason: str) -> None:
    with pytest.raises(tw.RemoteProtocolError, match=reason):
        tw.parse_from_twilio(text)


def test_payload_must_be_one_20ms_frame() -> None:
    with pytest.raises(tw.RemoteProtocolError, match="160 bytes, got 159"):
        tw.parse_from_twilio(emu.build_inbound_media(2, SID, 1, 0, FRAME[:159]))


def test_remote_error_is_distinct_from_local_error() -> None:
    assert not issubclass(tw.RemoteProtocolError, tw.LocalProtocolError)
    assert issubclass(tw.RemoteProtocolError, tw.ProtocolError)


def test_outbound_builders_exact_text() -> None:
    assert tw.build_media(SID, b"\xff\x00") == (
        '{"event":"media","streamSid":"%s","media":{"payload":"%s"}}' % (SID, base64.b64encode(b"\xff\x00").decode())
    )
    assert tw.build_mark(SID, "g0:1:100") == '{"event":"mark","streamSid":"%s","mark":{"name":"g0:1:100"}}' % SID
    assert tw.build_clear(SID) == '{"event":"clear","streamSid":"%s"}' % SID


def _events(*texts: str) -> list[tw.TwilioEvent]:
    return [tw.parse_from_twilio(t) for t in texts]


def test_state_machine_accepts_twilio_order() -> None:
    st = tw.StreamState()
    for ev in _events(emu.build_connected(), emu.build_start(1, SID, ACCT, CALL, {}),
                      emu.build_inbound_media(2, SID, 1, 0, FRAME), emu.build_mark_echo(3, SID, "m"),
                      emu.build_stop(4, SID, ACCT, CALL)):
        st.receive(ev)
    assert st.phase is tw.Phase.STOPPED and st.stream_sid == SID


@pytest.mark.parametrize(
    ("texts", "reason"),
    [
        ([emu.build_inbound_media(2, SID, 1, 0, FRAME)], "media before start"),
        ([emu.build_connected(), emu.build_connected()], "connected sent twice"),
        ([emu.build_start(1, SID, ACCT, CALL, {}), emu.build_start(2, SID, ACCT, CALL, {})], "start sent twice"),
        ([emu.build_start(1, SID, ACCT, CALL, {}), emu.build_inbound_media(2, "MZ" + "9" * 32, 1, 0, FRAME)],
         "does not match"),
        ([emu.build_start(1, SID, ACCT, CALL, {}), emu.build_stop(2, SID, ACCT, CALL),
          emu.build_inbound_media(3, SID, 1, 0, FRAME)], "after stop"),
    ],
)
def test_state_machine_rejects_wrong_order(texts: list[str], reason: str) -> None:
    st = tw.StreamState()
    with pytest.raises(tw.RemoteProtocolError, match=reason):
        for ev in _events(*texts):
            st.receive(ev)


def test_state_machine_rejects_non_mulaw() -> None:
    raw = json.loads(emu.build_start(1, SID, ACCT, CALL, {}))
    raw["start"]["mediaFormat"]["encoding"] = "audio/x-alaw"
    with pytest.raises(tw.RemoteProtocolError, match="unsupported media format"):
        tw.StreamState().receive(tw.parse_from_twilio(json.dumps(raw)))


def test_start_with_a_stream_sid_that_is_no_sid_is_refused() -> None:
    # outbound messages are templates: a quote in the SID would break their JSON
    bad = tw.parse_from_twilio(emu.build_start(1, 'MZ"x', ACCT, CALL, {}))
    with pytest.raises(tw.RemoteProtocolError, match="is not a SID"):
        tw.StreamState().receive(bad)
