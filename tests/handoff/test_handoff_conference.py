"""The warm transfer's pure parts: names, the legs' TwiML, what a leg's status means."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest

from twibridge.handoff import conference as conf

CALLER = "CA" + "1" * 32


def test_both_legs_join_the_conference_named_for_the_caller() -> None:
    name = conf.conference_name(CALLER)
    human, caller = ET.fromstring(conf.human_twiml("hello", name)), ET.fromstring(conf.caller_twiml(name))
    assert human.findtext("Dial/Conference") == caller.findtext("Dial/Conference") == name == f"twibridge-{CALLER}"
    assert [c.tag for c in human] == ["Say", "Dial"] and human.findtext("Say") == "hello"
    for doc in (human, caller):
        room = doc.find("Dial/Conference")
        assert room is not None and room.get("endConferenceOnExit") == "true" and room.get("beep") == "false"


def test_announce_fills_from_and_summary_and_a_summary_stays_text() -> None:
    text = conf.render_announce("Transferring a caller from {from}. {summary}", "+15551234567",
                                "Wants {from} refund\n\n for <order> 42 & more")
    assert text == "Transferring a caller from 1 5 5 5 1 2 3 4 5 6 7. Wants {from} refund for <order> 42 & more"
    doc = ET.fromstring(conf.human_twiml(text, "room"))  # escaped: still well-formed XML
    assert doc.findtext("Say") == text


def test_summary_is_clipped_and_control_characters_dropped() -> None:
    long = "x" * 2000 + "\x00\x07"
    assert len(conf.clean_summary(long)) == conf.MAX_SUMMARY_CHARS
    assert conf.clean_summary("a\x00b\x1bc") == "abc"
    assert conf.clean_summary(None) == ""
    assert conf.render_announce("From {from}. {summary}", "", "") == "From an unknown number."


def test_status_url_names_the_caller() -> None:
    url = conf.status_url("https://bridge.example.com/", CALLER)
    parts = urlsplit(url)
    assert parts.path == conf.STATUS_PATH and parse_qs(parts.query) == {"call": [CALLER]}


@pytest.mark.parametrize(("status", "answered_by", "outcome"), [
    ("queued", "", None), ("initiated", "", None), ("ringing", "", None),
    ("in-progress", "", None),  # answered, detection still listening
    ("in-progress", "human", "answered"), ("in-progress", "unknown", "answered"),
    ("in-progress", "machine_start", "machine"), ("completed", "fax", "machine"),
    ("busy", "", "busy"), ("no-answer", "", "no-answer"), ("failed", "", "failed"), ("canceled", "", "canceled"),
    ("completed", "human", "hung-up"),
])
def test_ring_outcome(status: str, answered_by: str, outcome: str | None) -> None:
    assert conf.ring_outcome(status, answered_by) == outcome
