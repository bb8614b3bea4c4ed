"""What the caller has heard: outbound pacing and mark accounting, sans-IO.

Twilio queues whatever we send and plays it in real time; only its echo of a
``mark`` tells us what has actually been heard.  This module keeps, per call,
one playout clock and, per agent turn, ``sent_ms`` and ``played_ms``:

* **Pacing.** ``play_end`` is when everything sent so far will have finished
  playing.  The next chunk may go when ``play_end - now <= lead``; a late
  writer (``play_end < now``: Twilio ran dry) catches up from ``now`` instead
  of bursting to make up lost time.  Absolute deadlines, one clock per call:
  no drift, no gaps, and never more than ``lead`` for ``clear`` to discard.
* **Marks.** The speaker sends one whenever ``chunk_ms`` of a turn has gone
  out since the last, and after the turn's last audio, named
  ``g<generation>:<turn>:<ms>`` (cumulative ms of that turn sent up to it).
  A ``clear`` bumps the generation, so echoes of marks flushed by it are
  recognised as cancelled, not played.
* **Heard position** on barge-in: the last echoed mark's ms plus what the
  clock says played since, clamped to ``[0, sent_ms]`` — never beyond what
  was sent (OpenAI rejects a truncate past the audio it produced).
* **When each message plays**: :meth:`Playout.on_sent` records
  ``last_start`` (when the message just sent starts playing, on the call's
  clock) and :meth:`Playout.clear` ``cleared_at`` (when playback was cut):
  what a recorder needs to line the agent's audio up with the caller's.

All times are plain floats (seconds, from ``trio.current_time()`` in the
caller), so tests drive it with numbers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass
class TurnPlayout:
    """Bookkeeping for one agent reply (turn)."""

    turn: int
    item_id: str
    sent_ms: int = 0
    marked_ms: int = 0  # sent_ms as of the last mark sent
    played_ms: int = 0
    first_sent_at: float | None = None
    last_echo_at: float | None = None
    finished_sending: bool = False
    cancelled: bool = False

    @property
    def fully_played(self) -> bool:
        """The agent has finished speaking: the turn's last mark came back."""
        return self.finished_sending and self.played_ms >= self.sent_ms

    def heard_ms(self, now: float) -> int:
        """Best estimate of how much of this turn the caller heard by ``now``."""
        if self.first_sent_at is None:
            return 0
        since = self.last_echo_at if self.last_echo_at is not None else self.first_sent_at
        estimate = self.played_ms + round((now - since) * 1000)
        return max(0, min(estimate, self.sent_ms))


@dataclass(frozen=True, slots=True)
class MarkEcho:
    turn: int
    ms: int
    stale: bool  # from a generation before the last clear


class Playout:
    """One call's outbound clock, marks and turn accounting."""

    def __init__(self, lead_ms: int = 200, level_window: int = 32) -> None:
        self.lead_s = lead_ms / 1000
        self.generation = 0
        self.play_end = 0.0
        self.last_start = 0.0  # when the last message sent starts playing (our clock)
        self.cleared_at: float | None = None  # when the last clear cut playback
        self.turns: dict[int, TurnPlayout] = {}
        self._levels: deque[tuple[float, float, float]] = deque(maxlen=level_window)
        self.discarded_ms_total = 0
        self.played_ms_total = 0  # confirmed by Twilio's mark echoes, all turns

    # -- pacing ----------------------------------------------------------

    def send_at(self, now: float) -> float:
        """The earliest time the next chunk may be sent (may be ``<= now``)."""
        return self.play_end - self.lead_s

    def buffered_ms(self, now: float) -> int:
        """Audio queued at Twilio, not yet played, by our clock."""
        return max(0, int((self.play_end - now) * 1000))

    def on_sent(self, turn: TurnPlayout, ms: int, now: float, level_dbfs: float) -> str:
        """Record a message of ``ms`` sent for ``turn``; return the name a mark after it would carry."""
        start = self.last_start = max(self.play_end, now)
        self.play_end = start + ms / 1000
        self._levels.append((start, self.play_end, level_dbfs))
        if turn.first_sent_at is None:
            turn.first_sent_at = start
        turn.sent_ms += ms
        return self.mark_name(turn)

    def mark_name(self, turn: TurnPlayout) -> str:
        """The name of a mark covering everything of ``turn`` sent so far."""
        return f"g{self.generation}:{turn.turn}:{turn.sent_ms}"

    # -- marks -----------------------------------------------------------

    def new_turn(self, turn: int, item_id: str) -> TurnPlayout:
        tp = TurnPlayout(turn=turn, item_id=item_id)
        self.turns[turn] = tp
        # Keep only recent turns: bounded memory for hour-long calls.
        for old in [t for t in self.turns if t < turn - 8]:
            del self.turns[old]
        return tp

    def on_mark(self, name: str, now: float) -> MarkEcho | None:
        """Account for Twilio's echo of a mark; None when not one of ours."""
        try:
            gen_s, turn_s, ms_s = name.split(":")
            gen, turn, ms = int(gen_s[1:]), int(turn_s), int(ms_s)
        except ValueError:
            return None
        if not gen_s.startswith("g"):
            return None
        stale = gen != self.generation
        tp = self.turns.get(turn)
        if tp is not None and not stale and not tp.cancelled and ms > tp.played_ms:
            played = min(ms, tp.sent_ms)
            self.played_ms_total += played - tp.played_ms
            tp.played_ms = played
            tp.last_echo_at = now
        return MarkEcho(turn=turn, ms=ms, stale=stale)

    def clear(self, now: float) -> int:
        """Twilio was told to drop its queue: reset the clock; return ms discarded."""
        discarded = self.buffered_ms(now)
        self.discarded_ms_total += discarded
        self.generation += 1
        self.play_end = self.cleared_at = now
        self._levels.clear()
        return discarded

    # -- echo gating -----------------------------------------------------

    def agent_level(self, now: float, tail_s: float = 0.3) -> float | None:
        """The loudest agent audio playing at the caller around ``now``.

        ``tail_s`` covers the echo path's delay.  None when nothing plays.
        Runs for every inbound frame while the agent talks, so chunks that
        ended before ``now - tail_s`` are dropped for good (``now`` comes from
        the call's monotonic clock and never goes back) and the scan stops
        at the first chunk not yet playing: a few entries, not the window.
        """
        levels = self._levels
        horizon = now - tail_s
        while levels and levels[0][1] < horizon:
            levels.popleft()
        best: float | None = None
        for start, _end, level in levels:
            if start > now:
                break  # chunks are in playout order: the rest start later still
            if best is None or level > best:
                best = level
        return best
