"""TwiML answers, built with ``twilio.twiml.voice_response.VoiceResponse``."""

from __future__ import annotations

from typing import Mapping

from twilio.twiml.voice_response import VoiceResponse

STREAM_NAME = "twibridge"


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
        stream.parameter(name=name, value=value)
    vr.hangup()
    return str(vr)


def busy(say: str, dial: str = "") -> str:
    """What a caller hears when we cannot take the call (full, draining, agent down)."""
    vr = VoiceResponse()
    if say:
        vr.say(say)
    if dial:
        vr.dial(dial)
    vr.hangup()
    return str(vr)
