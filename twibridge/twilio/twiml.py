"""TwiML answers, built with ``twilio.twiml.voice_response.VoiceResponse``."""

from __future__ import annotations

import re
from typing import Mapping

from twilio.twiml.voice_response import VoiceResponse

STREAM_NAME = "twibridge"

#: Characters XML 1.0 forbids (C0 controls but tab/LF/CR, lone surrogates, U+FFFE/U+FFFF).
#: ElementTree writes them as they are, which makes the whole document ill-formed.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """``text`` without the characters no XML document may hold.

    ``From``/``To`` come from the caller's network (a CNAM or SIP header can
    carry anything); one control character there made our answer unparseable
    and Twilio dropped that call.
    """
    return _NOT_XML.sub("", text)


def connect_stream(stream_url: str, status_url: str, params: Mapping[str, str], say: str = "") -> str:
    """``<Connect><Stream>`` with the call's data as ``<Parameter>``s, then ``<Hangup/>``.

    Stream URLs may not carry a query string, so per-call data rides in
    ``<Parameter>`` and comes back in ``start.customParameters``.  When we
    close the socket Twilio runs the next verb: ``<Hangup/>``, never dead air.
    ``say`` (``[recording] announce``) is spoken by Twilio first, before the
    stream opens: the caller hears it whatever the agent does.
    """
    vr = VoiceResponse()
    if say:
        vr.say(say)
    stream = vr.connect().stream(url=stream_url, name=STREAM_NAME, status_callback=status_url)
    for name, value in params.items():
        stream.parameter(name=xml_safe(name), value=xml_safe(value))
    vr.hangup()
    return str(vr)


def busy(say: str, dial: str = "") -> str:
    """What a caller hears when we cannot take the call (full, draining, agent down)."""
    vr = VoiceResponse()
    if say:
        vr.say(xml_safe(say))
    if dial:
        vr.dial(xml_safe(dial))
    vr.hangup()
    return str(vr)


def voicemail(say: str) -> str:
    """An outbound call a machine answered: leave ``say`` after the beep, or just hang up."""
    vr = VoiceResponse()
    if say:
        vr.say(say)
    vr.hangup()
    return str(vr)
