"""The call's event log for ``report.json``: every message, media summarised.

Logging each 20 ms media frame would make a one-minute call's report
~6,000 entries of noise, so consecutive media frames in one direction are
folded into one *run* entry (``frames``, ``audio_ms``, ``until_ms``) that
stays open until that direction sends something else.  Everything else
(connected, start, dtmf, marks, clear, stop, close, errors) is one entry
each.  The log is bounded: past ``max_events`` entries it only counts.
"""

from __future__ import annotations

from typing import Any

#: A cap far above any sane call (a 10-minute call with a mark per 100 ms
#: reply chunk logs ~12,000 entries).
MAX_EVENTS = 20_000
TO_SERVER = "to_server"
FROM_SERVER = "from_server"


class EventLog:
    """Ordered ``{t_ms, dir, event, …}`` entries, media runs folded."""

    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        self._events: list[dict[str, Any]] = []
        self._open_run: dict[str, dict[str, Any]] = {}
        self._max = max_events
        self.dropped = 0

    def add(self, t_ms: float, direction: str, event: str, **fields: Any) -> None:
        """Log one non-media event; it ends ``direction``'s open media run."""
        self._open_run.pop(direction, None)
        self._append({"t_ms": round(t_ms, 1), "dir": direction, "event": event, **fields})

    def media(self, t_ms: float, direction: str, nbytes: int) -> None:
        """Log one media message of ``nbytes`` μ-law bytes, folded into a run."""
        audio_ms = nbytes / 8
        run = self._open_run.get(direction)
        if run is not None:
            run["messages"] += 1
            run["audio_ms"] = round(run["audio_ms"] + audio_ms, 3)
            run["until_ms"] = round(t_ms, 1)
            return
        run = {"t_ms": round(t_ms, 1), "dir": direction, "event": "media",
               "messages": 1, "audio_ms": audio_ms, "until_ms": round(t_ms, 1)}
        if self._append(run):
            self._open_run[direction] = run

    def _append(self, entry: dict[str, Any]) -> bool:
        if len(self._events) >= self._max:
            self.dropped += 1
            return False
        self._events.append(entry)
        return True

    def as_list(self) -> list[dict[str, Any]]:
        """The entries (copies), plus a final note if some were dropped."""
        out = [dict(e) for e in self._events]
        if self.dropped:
            out.append({"t_ms": out[-1]["t_ms"] if out else 0.0, "dir": FROM_SERVER,
                        "event": "log-truncated", "dropped": self.dropped})
        return out
