"""Twilio's side of Media Streams (the simulator's role): the bridge's frames checked as Twilio checks them."""

from __future__ import annotations

import pytest

from twibridge.twilio import emulation as emu
from twibridge.twilio import protocol as tw

SID = "MZ" + "1" * 32


def test_twilio_role_accepts_what_the_bridge_builds() -> None:
    assert emu.parse_from_bridge(tw.build_media(SID, b"ab"), SID) == tw.OutMedia(SID, b"ab")
    assert emu.parse_from_bridge(tw.build_mark(SID, "m"), SID) == tw.OutMark(SID, "m")
    assert emu.parse_from_bridge(tw.build_clear(SID), SID) == tw.OutClear(SID)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (b"binary", "31950"),
        ("nope", "31951"),
        ('{"event":"media","streamSid":"MZother","media":{"payload":""}}', "31951: wrong streamSid"),
        ('{"event":"dance","streamSid":"%s"}' % SID, "31951: unsupported event"),
        ('{"event":"clear","streamSid":"%s","extra":1}' % SID, "31951: unexpected fields"),
        ('{"event":"media","streamSid":"%s","media":{"payload":"", "track":"x"}}' % SID, "31951"),
    ],
)
def test_twilio_role_flags_bad_bridge_frames(text: str | bytes, code: str) -> None:
    with pytest.raises(tw.RemoteProtocolError, match=code):
        emu.parse_from_bridge(text, SID)
