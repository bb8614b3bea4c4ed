"""The post-call report (``call_ended``), sans-IO: a fixed reason list and a JSON body.

The report is built once, in the call's teardown, from plain values (the
call's summary, its :class:`~twibridge.records.journal.Journal`, the start
event's identifiers): nothing here touches a socket or a file, so every field
is tested with numbers.  Its transcript is already redacted (the journal
redacts on the way in), and ``params`` never holds the stream token (the call
drops it when it reads ``start``).

``ended_reason`` is one of :data:`ENDED_REASONS`, a documented, fixed list a
receiver can switch on; new reasons are only ever added.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

#: Every ``ended_reason`` a report may carry, with its meaning (docs/records.md lists them).
ENDED_REASONS: dict[str, str] = {
    "caller-hung-up": "Twilio sent stop: the caller hung up (or Twilio ended the stream)",
    "agent-hung-up": "the agent ended the call (its end-call function, a hang-up over REST)",
    "transferred": "the call was transferred to a person ([fallback] dial or the agent's target)",
    "agent-failed": "the agent could not serve the call (refused, or reconnects exhausted)",
    "timeout": "no media from Twilio for [calls] idle_timeout_s",
    "max-duration": "the call outlasted [calls] max_duration_s",
    "shutdown": "the server shut down and its drain period ran out",
    "protocol-error": "Twilio's side broke the Media Streams protocol (bad JSON, wrong order, oversize)",
    "stream-dropped": "the media socket closed without a stop",
    "error": "an internal error (a bug: the log holds its traceback)",
}
#: The call's ``outcome`` (runner.py, the call.ended log line) → its ``ended_reason``.
OUTCOME_REASONS: dict[str, str] = {
    "completed": "caller-hung-up", "agent-hangup": "agent-hung-up", "transferred": "transferred",
    "agent-failed": "agent-failed", "idle-timeout": "timeout", "max-duration": "max-duration",
    "shutdown": "shutdown", "protocol-error": "protocol-error", "caller-dropped": "stream-dropped",
    "error": "error",
}
EVENT_TYPE = "call_ended"


def ended_reason(outcome: str | None) -> str:
    """The documented reason for a call's outcome (anything unknown is ``error``)."""
    return OUTCOME_REASONS.get(outcome or "", "error")


def rfc3339(epoch: float) -> str:
    """UTC, millisecond precision, ``Z`` suffix (``2026-12-03T08:13:40.123Z``)."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """``{"p50", "p95"}`` (nearest rank, ms rounded to 0.1); None when there are no values."""
    if not values:
        return {"p50": None, "p95": None}
    s = sorted(values)

    def pct(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * len(s)))], 1)

    return {"p50": pct(0.5), "p95": pct(0.95)}


def build_report(*, ids: Mapping[str, str], agent: str, provider: str, started_at: float, ended_at: float,
                 outcome: str | None, reason: str, transfer_to: str | None,
                 transfers: Sequence[Mapping[str, Any]], turns: int, barge_ins: int,
                 reply_latency_ms: Sequence[float], first_audio_ms: Sequence[float],
                 transcript: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]],
                 recording: str | None, recording_pauses: Sequence[Mapping[str, Any]],
                 usage: Mapping[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
    """The ``call_ended`` body (the issue's fields, in its order, plus ``type``, ``reason``
    and ``recording_pauses``).  ``ids`` holds call_sid, stream_sid, account_sid, from, to."""
    return {
        "type": EVENT_TYPE,
        "call_sid": ids.get("call_sid", ""), "stream_sid": ids.get("stream_sid", ""),
        "account_sid": ids.get("account_sid", ""), "from": ids.get("from", ""), "to": ids.get("to", ""),
        "agent": agent, "provider": provider,
        "started_at": rfc3339(started_at), "ended_at": rfc3339(ended_at),
        "duration_s": round(max(0.0, ended_at - started_at), 3),
        "outcome": outcome, "ended_reason": ended_reason(outcome), "reason": reason,
        "transfer_to": transfer_to,
        "transfers": [dict(t) for t in transfers],
        "turns": turns, "barge_ins": barge_ins,
        "reply_latency_ms": percentiles(reply_latency_ms), "first_audio_ms": percentiles(first_audio_ms),
        "transcript": [dict(t) for t in transcript],
        "tools": [dict(t) for t in tools],
        "recording": recording,
        "recording_pauses": [dict(p) for p in recording_pauses],
        "usage": dict(usage),
        "params": dict(params),
    }
