"""One call's record as it happens, sans-IO: transcript, tools, usage, pauses, a timeline.

The call feeds it plain values with call-relative times (ms since ``start``);
teardown reads it into the report.  Everything is bounded (an hour-long call
must not grow without limit), and transcript text is redacted on the way in,
so no later copy can hold the raw text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from twibridge.records.redact import Redactor

MAX_TRANSCRIPT = 1000
MAX_TOOLS = 200
MAX_EVENTS = 5000
MAX_TEXT = 4000


@dataclass
class Journal:
    redact: Redactor = field(default_factory=Redactor)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    #: (t_ms, kind, data) for the HTML picture: turns, replies, marks, clears, barge-ins, tools.
    events: list[dict[str, Any]] = field(default_factory=list)
    first_audio_ms: list[float] = field(default_factory=list)
    #: Recording pauses: ``{"from_ms", "to_ms"}`` (``to_ms`` None while paused).
    pauses: list[dict[str, Any]] = field(default_factory=list)
    dropped_events: int = 0

    def add_transcript(self, role: str, text: str, t_ms: int, item_id: str = "") -> dict[str, Any] | None:
        """Keep one final transcript line (redacted); returns it (None when full or empty)."""
        if not text or len(self.transcript) >= MAX_TRANSCRIPT:
            return None
        entry: dict[str, Any] = {"role": role, "text": self.redact(text[:MAX_TEXT]), "t_ms": max(0, t_ms)}
        if item_id:
            entry["item_id"] = item_id
        self.transcript.append(entry)
        return entry

    def replace_transcript(self, item_id: str, text: str) -> bool:
        """The provider cut ``item_id``'s text to what was heard: keep that instead."""
        for entry in reversed(self.transcript):
            if entry.get("item_id") == item_id:
                entry["text"] = self.redact(text[:MAX_TEXT])
                entry["truncated"] = True
                return True
        return False

    def tool(self, name: str, duration_ms: float, outcome: str, t_ms: int | None = None) -> None:
        if len(self.tools) < MAX_TOOLS:
            self.tools.append({"name": name, "duration_ms": round(duration_ms, 1), "outcome": outcome})
        if t_ms is not None:
            self.event(t_ms, "tool", name=name, duration_ms=round(duration_ms, 1), outcome=outcome)

    def add_usage(self, reported: Mapping[str, Any]) -> None:
        """Sum what the provider reports (numbers added, nested tables merged)."""
        _merge(self.usage, reported)

    def event(self, t_ms: int, kind: str, **data: Any) -> None:
        if len(self.events) >= MAX_EVENTS:
            self.dropped_events += 1
            return
        self.events.append({"t_ms": max(0, t_ms), "kind": kind, **data})

    def pause(self, t_ms: int) -> bool:
        """Recording paused at ``t_ms``; False when already paused."""
        if self.pauses and self.pauses[-1]["to_ms"] is None:
            return False
        self.pauses.append({"from_ms": t_ms, "to_ms": None})
        return True

    def resume(self, t_ms: int) -> bool:
        if not self.pauses or self.pauses[-1]["to_ms"] is not None:
            return False
        self.pauses[-1]["to_ms"] = t_ms
        return True

    @property
    def paused(self) -> bool:
        return bool(self.pauses) and self.pauses[-1]["to_ms"] is None

    def closed_pauses(self, end_ms: int) -> list[dict[str, Any]]:
        """The pauses with an open one closed at ``end_ms`` (the call ended paused)."""
        return [{"from_ms": p["from_ms"], "to_ms": end_ms if p["to_ms"] is None else p["to_ms"]}
                for p in self.pauses]


def _merge(into: dict[str, Any], src: Mapping[str, Any]) -> None:
    for key, value in src.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            into[key] = into.get(key, 0) + value if isinstance(into.get(key, 0), (int, float)) else value
        elif isinstance(value, Mapping):
            child = into.get(key)
            if not isinstance(child, dict):
                child = into[key] = {}
            _merge(child, value)
