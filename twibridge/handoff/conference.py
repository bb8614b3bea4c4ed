"""A warm transfer's pure parts (sans-IO): names, TwiML, what a status means.

Twilio's own recipe for a warm transfer is a conference: the human's leg
and the caller's leg each run ``<Dial><Conference>`` with the same name,
and Twilio joins them.  Everything here is a function of its arguments, so
the flow in :mod:`twibridge.handoff.warm` and its tests share one truth:

* :func:`conference_name` — one per caller CallSid (both legs use it);
* :func:`human_twiml` — what the human's leg runs once answered: the
  announcement (with the agent's summary), then the conference;
* :func:`caller_twiml` — what the caller's call becomes once the human is
  there (it ends the Media Stream, as any TwiML update does);
* :func:`ring_outcome` — a status callback's (or the call resource's)
  ``CallStatus``/``AnsweredBy`` → still ringing, answered, or why not.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from twilio.twiml.voice_response import VoiceResponse

from twibridge.agents.base import MAX_SUMMARY_CHARS
from twibridge.twilio.outbound import MACHINE_ANSWERS
from twibridge.twilio.twiml import xml_safe

#: The signed path Twilio posts the human leg's status to (checked like ``/voice``).
STATUS_PATH = "/transfer-status"
#: ``?call=`` names the caller's CallSid: the status of *its* human leg.
CALL_PARAMETER = "call"
#: The outcomes a warm transfer ends with (the report's ``transfers[].outcome``).
ANSWERED = "answered"
FAILED_STATUSES = frozenset({"busy", "failed", "no-answer", "canceled"})
OUTCOMES = frozenset({ANSWERED, "machine", "hung-up", "ring-timeout", "rest-error", *FAILED_STATUSES})

_SPACE = re.compile(r"\s+")


def conference_name(call_sid: str) -> str:
    """The conference both legs join: the caller's CallSid makes it unique."""
    return f"twibridge-{call_sid}"


def status_url(public_url: str, call_sid: str) -> str:
    return f"{public_url.rstrip('/')}{STATUS_PATH}?{urlencode({CALL_PARAMETER: call_sid})}"


def clean_summary(summary: str | None) -> str:
    """The agent's summary as one line of speech: whitespace folded, clipped, XML-safe."""
    text = _SPACE.sub(" ", xml_safe(summary or "")).strip()
    return text if len(text) <= MAX_SUMMARY_CHARS else text[: MAX_SUMMARY_CHARS - 1].rstrip() + "…"


def spoken_number(number: str) -> str:
    """``+15551234567`` → ``1 5 5 5 …``: a text-to-speech voice reads digits one by one."""
    digits = number.lstrip("+")
    return " ".join(digits) if digits else "an unknown number"


def render_announce(template: str, from_number: str, summary: str) -> str:
    """``[transfer] announce`` with ``{from}`` and ``{summary}`` filled in (plain
    replacement: a summary holding braces is text, never a placeholder)."""
    text = template.replace("{summary}", "\x00").replace("{from}", spoken_number(xml_safe(from_number)))
    return _SPACE.sub(" ", text.replace("\x00", clean_summary(summary))).strip()


def human_twiml(announce: str, name: str) -> str:
    """The human's leg: hear the announcement, then wait in the conference for the caller.

    ``endConferenceOnExit``: when the human hangs up, the conference ends and
    the caller's ``<Dial>`` with it (no caller left alone in an empty room).
    No wait music and no beep: the caller is joined within a second or two.
    """
    vr = VoiceResponse()
    if announce:
        vr.say(announce)
    return _join(vr, name)


def caller_twiml(name: str) -> str:
    """The caller's call once the human answered: into the same conference."""
    return _join(VoiceResponse(), name)


def _join(vr: VoiceResponse, name: str) -> str:
    """``vr`` ending in ``<Dial><Conference>``, the same on both legs (no beep, no wait music)."""
    vr.dial().conference(name, start_conference_on_enter=True, end_conference_on_exit=True, beep=False,
                         wait_url="")
    return str(vr)


def ring_outcome(status: str, answered_by: str) -> str | None:
    """What the human leg's ``(CallStatus, AnsweredBy)`` means: None while it still rings
    (or answering-machine detection has not said yet), else an outcome.

    ``human`` and ``unknown`` count as a person (as for outbound calls: a person
    wrongly treated as a machine is worse); any machine or fax is ``machine``.
    A leg that ended after answering but before it was joined is ``hung-up``.
    """
    if status in FAILED_STATUSES:
        return status
    if answered_by in MACHINE_ANSWERS:
        return "machine"
    if status == "completed":
        return "hung-up"
    if status == "in-progress" and answered_by in ("human", "unknown"):
        return ANSWERED
    return None  # queued, initiated, ringing; or in progress while detection listens
