"""twibridge.records.journal: bounded, redacting, pauses that close at the end."""

from __future__ import annotations

from twibridge.records import journal as jn
from twibridge.records.journal import Journal
from twibridge.records.redact import Redactor


def test_bounded_and_redacted() -> None:
    j = Journal(Redactor(["card"]))
    for i in range(jn.MAX_TRANSCRIPT + 5):
        j.add_transcript("user", f"line {i} 4111 1111 1111 1111", i)
    assert len(j.transcript) == jn.MAX_TRANSCRIPT and "4111" not in str(j.transcript)
    assert j.add_transcript("user", "", 0) is None
    for i in range(jn.MAX_EVENTS + 3):
        j.event(i, "mark")
    assert len(j.events) == jn.MAX_EVENTS and j.dropped_events == 3


def test_pauses_and_tools() -> None:
    j = Journal()
    assert j.pause(100) and not j.pause(150) and j.paused
    assert j.resume(300) and not j.resume(310)
    assert j.pause(900)
    assert j.closed_pauses(1000) == [{"from_ms": 100, "to_ms": 300}, {"from_ms": 900, "to_ms": 1000}]
    j.tool("lookup_order", 123.456, "ok", t_ms=50)
    assert j.tools == [{"name": "lookup_order", "duration_ms": 123.5, "outcome": "ok"}]
    assert j.events[-1] == {"t_ms": 50, "kind": "tool", "name": "lookup_order", "duration_ms": 123.5, "outcome": "ok"}
