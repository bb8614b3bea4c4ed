"""Inbound jitter handling, sans-IO: order, de-duplicate and gap-fill frames.

One TCP socket cannot reorder, but proxies, fuzzers and a future transport
can, and Twilio skips silent frames on some calls (``timestamp`` jumps).  The
agent's VAD and our own turn clock need a continuous 8 kHz stream, so:

* frames are released in ``sequenceNumber`` order;
* ``sequenceNumber`` counts *every* message Twilio sends (marks, DTMF
  too), so a jump in it is not by itself a missing frame: a frame whose
  ``timestamp`` is the next 20 ms of stream time is released at once.  (Held
  back instead, every frame after a mark echo waited out the whole window:
  +60 ms inbound latency and barge-in delay, measured by ``bench/``);
* a frame may arrive up to ``window_ms`` late (held back that long);
  later than that, or a duplicate, it is dropped and counted;
* a jump in ``timestamp`` is filled with μ-law silence (0xFF), so the audio
  clock (bytes / 8) always equals the media timestamp;
* but never more silence than wall time allows (issue #23: frames with 10 s
  timestamp jumps cost ~30× the CPU of normal ones).  Given the wall clock
  (``now_ms``), the audio clock may run ahead of the time elapsed since the
  first frame by at most the window plus one frame: the fill stops there.  A
  bigger jump is a **discontinuity**: counted, filled only that far, and the
  stream's timestamps re-based so the next frames follow on without a gap
  (a peer cannot make us invent audio faster than a phone call produces it).

Everything is bounded: the reorder buffer holds at most ``window_ms / 20 + 1``
frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from twibridge.twilio.protocol import BYTES_PER_MS, FRAME_BYTES, FRAME_MS

SILENCE = b"\xff"
#: Never invent more than this much silence for one gap: a timestamp jump
#: beyond it is a broken peer, not a quiet caller.
MAX_GAP_FILL_MS = 10_000


@dataclass
class JitterStats:
    reordered: int = 0
    duplicates: int = 0
    late_dropped: int = 0
    gaps_filled: int = 0
    gap_ms: int = 0
    discontinuities: int = 0


@dataclass(frozen=True, slots=True)
class Frame:
    """Audio released downstream: ``t_ms`` is its start in stream time."""

    t_ms: int
    payload: bytes


class JitterBuffer:
    """Reorder/de-duplicate/gap-fill for one inbound stream."""

    def __init__(self, window_ms: int = 60) -> None:
        self.window_ms = window_ms
        self.window_frames = window_ms // FRAME_MS
        self.stats = JitterStats()
        self._next_seq: int | None = None
        self._clock_ms = 0  # audio time of the next byte released
        self._offset_ms = 0  # subtracted from timestamps (grows at each discontinuity)
        self._start: tuple[float, int] | None = None  # (wall ms, audio clock) at the first frame
        self._now_ms: float | None = None
        self._held: dict[int, tuple[int, bytes]] = {}
        self._skipped: deque[int] = deque(maxlen=64)  # recent numbers given up on

    @property
    def depth(self) -> int:
        """Frames held back waiting for a missing one (bounded by the window)."""
        return len(self._held)

    @property
    def clock_ms(self) -> int:
        return self._clock_ms

    def push(self, seq: int, timestamp_ms: int, payload: bytes, now_ms: float | None = None) -> list[Frame]:
        """Accept one media frame; return the frames now ready, in order.

        ``now_ms``: the wall clock (ms, any origin) bounds gap fills; None: unbounded
        but for :data:`MAX_GAP_FILL_MS`.
        """
        if self._next_seq is None:
            self._next_seq, self._clock_ms = seq, timestamp_ms
            if now_ms is not None:
                self._start = (now_ms, timestamp_ms)
        self._now_ms = now_ms
        if not self._held and seq >= self._next_seq and timestamp_ms - self._offset_ms - self._clock_ms < FRAME_MS:
            # The common case, without the reorder machinery: the next audio in stream time.
            # A jump in ``seq`` here is not loss: marks and DTMF share the counter.
            self._next_seq = seq + 1
            frame = Frame(self._clock_ms, payload)
            self._clock_ms += len(payload) // BYTES_PER_MS
            return [frame]
        if seq < self._next_seq:
            if seq in self._skipped:
                self._skipped.remove(seq)
                self.stats.late_dropped += 1
            else:
                self.stats.duplicates += 1
            return []
        if seq in self._held:
            self.stats.duplicates += 1
            return []
        if self._held and seq < max(self._held):
            self.stats.reordered += 1
        self._held[seq] = (timestamp_ms, payload)
        out = self._release_in_order()
        while len(self._held) > self.window_frames:
            # The missing frame is later than the window allows: give up on it.
            first = min(self._held)
            self._skipped.extend(range(self._next_seq, first))
            self._next_seq = first
            out += self._release_in_order()
        return out

    def _release_in_order(self) -> list[Frame]:
        """Release held frames while the oldest one is next, by number or by stream time."""
        out: list[Frame] = []
        while self._held:
            seq = min(self._held)
            ts, payload = self._held[seq]
            if seq != self._next_seq and ts - self._offset_ms - self._clock_ms >= FRAME_MS:
                break  # a frame is missing before it: wait (bounded by the window)
            del self._held[seq]
            self._next_seq = seq + 1
            out += self._emit(ts, payload)
        return out

    def _allowed_fill(self) -> int:
        """Silence the wall clock allows now (ms): the wall time since the first frame, minus
        the audio released since, plus the window and one frame (the first frame's own delay
        and network jitter fit in there)."""
        if self._start is None or self._now_ms is None:
            return MAX_GAP_FILL_MS
        wall0, clock0 = self._start
        behind = (self._now_ms - wall0) - (self._clock_ms - clock0)
        return max(0, min(MAX_GAP_FILL_MS, int(self.window_ms + FRAME_MS + behind)))

    def _emit(self, ts: int, payload: bytes) -> list[Frame]:
        out: list[Frame] = []
        gap = ts - self._offset_ms - self._clock_ms
        if gap >= FRAME_MS:
            gap -= gap % FRAME_MS
            fill = min(gap, self._allowed_fill())
            fill -= fill % FRAME_MS
            if fill < gap:
                # More than wall time allows: a discontinuity, not a quiet caller.
                self.stats.discontinuities += 1
                self._offset_ms += gap - fill
            if fill:
                self.stats.gaps_filled += 1
                self.stats.gap_ms += fill
                out.extend(Frame(t, SILENCE * FRAME_BYTES)
                           for t in range(self._clock_ms, self._clock_ms + fill, FRAME_MS))
                self._clock_ms += fill
        # A timestamp behind the clock (jitter of a few ms, or a peer's
        # reset) is ignored: the audio clock stays monotonic and continuous.
        out.append(Frame(self._clock_ms, payload))
        self._clock_ms += len(payload) // BYTES_PER_MS
        return out
