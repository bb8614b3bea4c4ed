"""Per-call bounds on what a peer can make us keep, log or compute (issue #23).

Sans-IO: each takes the clock reading it needs.

* :class:`WarnLimiter` — a warning kind is logged for its first
  :data:`WARNINGS_PER_KIND` occurrences per call, then only counted; the
  counts go into the call summary (``warnings_suppressed``).
* :class:`TranscriptKeeper` — the call's transcript: each entry cut to
  :data:`~twibridge.agents.base.MAX_TRANSCRIPT_CHARS`, at most
  :data:`MAX_TRANSCRIPT_ENTRIES` entries and :data:`MAX_TRANSCRIPT_TOTAL_CHARS`
  characters per call (later entries dropped and counted).
* :class:`CallStats` — the counts and transcript a call keeps for its summary.
* :class:`InboundRate` — caller media at most :data:`MEDIA_RATE_FACTOR` × real
  time (a token bucket with :data:`MEDIA_BURST_FRAMES` of slack for a
  backlog a network stall releases at once).  Excess frames are **dropped and
  counted** (``inbound_over_rate``); a peer that keeps it up past
  :data:`MAX_OVER_RATE_FRAMES` is no phone call: the call ends as a protocol
  error.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from twibridge.agents.base import MAX_TRANSCRIPT_CHARS, clip

WARNINGS_PER_KIND = 5
MAX_TRANSCRIPT_ENTRIES = 100
MAX_TRANSCRIPT_TOTAL_CHARS = 32 * 1024
#: Media frames are 20 ms: 50 a second in real time.
FRAMES_PER_S = 50
MEDIA_RATE_FACTOR = 3
MEDIA_BURST_FRAMES = 250  # 5 s of audio
MAX_OVER_RATE_FRAMES = 500  # 10 s of audio thrown away


class WarnLimiter:
    """First N warnings of each kind per call; then a counter."""

    def __init__(self, first: int = WARNINGS_PER_KIND) -> None:
        self.first = first
        self._seen: dict[str, int] = {}

    def allow(self, kind: str) -> bool:
        """Log this one?  (Counts it either way.)"""
        n = self._seen.get(kind, 0) + 1
        self._seen[kind] = n
        return n <= self.first

    def seen(self, kind: str) -> int:
        return self._seen.get(kind, 0)

    @property
    def suppressed(self) -> dict[str, int]:
        """Kind → occurrences not logged (for the summary; empty when none)."""
        return {k: n - self.first for k, n in self._seen.items() if n > self.first}


class TranscriptKeeper:
    """The transcript entries a call keeps, bounded by count and by total size."""

    def __init__(self) -> None:
        self.entries: deque[dict[str, str]] = deque(maxlen=MAX_TRANSCRIPT_ENTRIES)
        self.chars = 0
        self.dropped = 0

    def add(self, role: str, text: str) -> bool:
        """Keep one entry (cut to size); False when the call's budget is spent."""
        text = clip(text, MAX_TRANSCRIPT_CHARS)
        if self.chars + len(text) > MAX_TRANSCRIPT_TOTAL_CHARS:
            self.dropped += 1
            return False
        if len(self.entries) == self.entries.maxlen:
            self.chars -= len(self.entries[0]["text"])
        self.entries.append({"role": role[:16], "text": text})
        self.chars += len(text)
        return True


class InboundRate:
    """A token bucket over caller frames: refilled at ``MEDIA_RATE_FACTOR`` × real time."""

    def __init__(self, factor: float = MEDIA_RATE_FACTOR, burst: int = MEDIA_BURST_FRAMES) -> None:
        self.rate = factor * FRAMES_PER_S
        self.burst = float(burst)
        self.tokens = float(burst)
        self.dropped = 0
        self._last: float | None = None

    def take(self, now: float) -> bool:
        """May this frame (arriving at ``now``, seconds) go on?  False: drop it (counted)."""
        if self._last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.dropped += 1
        return False

    @property
    def abusive(self) -> bool:
        return self.dropped > MAX_OVER_RATE_FRAMES


#: Cancelled reply ids a call remembers (late audio for older ones just plays as a new reply
#: would: an agent that keeps sending for a reply cut off that long ago is broken anyway).
MAX_CANCELLED_ITEMS = 256


class BoundedSet:
    """A set that forgets its oldest members past ``size`` (for ids a peer names)."""

    def __init__(self, size: int = MAX_CANCELLED_ITEMS) -> None:
        self.size = size
        self._items: dict[str, None] = {}

    def add(self, item: str) -> None:
        self._items.pop(item, None)
        self._items[item] = None
        while len(self._items) > self.size:
            del self._items[next(iter(self._items))]

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class CallStats:
    """What a call counts of its peer (the ``call.ended`` summary's ``frames_in``, ``unknown_events``)."""

    frames_in: int = 0
    unknown_events: int = 0
    transcript: TranscriptKeeper = field(default_factory=TranscriptKeeper)
