"""twibridge.twilio.twiml: our answers stay well-formed XML whatever the caller's numbers hold.

(Named apart from tests/simulate/test_twiml.py, the simulator's TwiML reader.)
Issue #23, item 16: a ``From`` with a control character made the ``/voice``
answer ill-formed, so Twilio failed that caller's call.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from support import bridge, post_signed, sid
from twibridge.twilio.twiml import busy, connect_stream, xml_safe

HOSTILE = "+1555\x00\x01\x08\x0b\x0c\x1b[31m\x7f\ufffe\uffff0001\t"


def test_xml_safe_strips_only_what_xml_forbids() -> None:
    assert xml_safe(HOSTILE) == "+1555[31m\x7f0001\t"  # DEL and tab are legal XML
    assert xml_safe("Zoë <&> \"x\"") == "Zoë <&> \"x\""  # escaping is ElementTree's job


def test_answers_with_hostile_values_parse() -> None:
    doc = connect_stream("wss://h/media-stream", "https://h/stream-status", {"From": HOSTILE, "To": "\x00"})
    params = {p.get("name"): p.get("value") for p in ET.fromstring(doc).iter("Parameter")}
    assert params == {"From": "+1555[31m\x7f0001\t", "To": ""}
    assert ET.fromstring(busy("sorry\x00", "+1\x01555")).find("Dial").text == "+1555"  # type: ignore[union-attr]


async def test_a_signed_voice_webhook_with_control_characters_gets_well_formed_twiml() -> None:
    form = {"CallSid": sid("CA", 1), "AccountSid": "AC" + "0" * 32, "From": HOSTILE, "To": "+1555\x00\x1f0002"}
    async with bridge() as (url, _):
        resp = await post_signed(url, "/voice", form)  # Twilio signs what it sends, controls included
    assert resp.status_code == 200
    params = {p.get("name"): p.get("value") for p in ET.fromstring(resp.text).iter("Parameter")}
    assert params["From"] == "+1555[31m\x7f0001\t" and params["To"] == "+15550002"
