"""Twilio's outbound playback buffer, emulated without I/O and without a clock.

What Twilio does with what a bridge sends on a bidirectional Media Stream
(twilio-media-streams.md §2-3), and what this class reproduces:

* ``media`` is queued and played in real time, in order.  When nothing is
  queued the line is silent; new audio starts playing as soon as it arrives.
* ``mark`` is queued behind the audio sent before it and echoed only once
  all of that audio has *finished playing*.  A mark sent while nothing is
  queued is echoed at once.
* ``clear`` drops all audio not yet played and echoes every pending mark at
  once.

Time is passed in explicitly (milliseconds on the call's audio timeline,
0 = stream start), so the rules are testable without sleeping and the I/O
driver can run the timeline at any speed.  Internally time is counted in
8 kHz samples (one μ-law byte each) so nothing drifts through float
rounding.

Every mutating method first plays the buffer up to ``now``; whatever that
produced (played audio, marks due for echo) accumulates and is handed out
by :meth:`PlaybackBuffer.advance`.  The driver's pattern is therefore: apply
the server's message at ``now``, then ``advance(now)`` and echo the marks.

The class also records the *heard* timeline: every played byte at its
position, μ-law silence (0xFF) where nothing played, which becomes
``--out reply.wav``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

#: 8 kHz μ-law: one byte per sample, 8 samples per millisecond.
SAMPLES_PER_MS = 8
#: μ-law code for silence (decodes to 0).
ULAW_SILENCE = 0xFF
#: Twilio documents no limit; we cap queued audio so a runaway bridge cannot
#: eat memory.  Ten minutes is far beyond any sane lead.
DEFAULT_MAX_QUEUED_MS = 10 * 60 * 1000
#: Cap on marks waiting for their audio to play.
DEFAULT_MAX_PENDING_MARKS = 10_000


def _samples(ms: float) -> int:
    return int(ms * SAMPLES_PER_MS) if ms > 0 else 0


@dataclass(frozen=True, slots=True)
class Played:
    """A stretch of audio that played, placed on the call timeline."""

    start_ms: float
    audio: bytes

    @property
    def end_ms(self) -> float:
        return self.start_ms + len(self.audio) / SAMPLES_PER_MS


@dataclass(frozen=True, slots=True)
class Progress:
    """What happened since the last :meth:`PlaybackBuffer.advance`.

    ``marks`` are the names to echo now, in the order they were sent;
    ``played`` the audio that played, contiguous pieces merged.
    """

    marks: tuple[str, ...]
    played: tuple[Played, ...]


@dataclass(frozen=True, slots=True)
class _Mark:
    name: str


class PlaybackBuffer:
    """Twilio's outbound buffer for one stream (see the module docstring).

    Args:
        max_queued_ms: audio queued beyond this is dropped (tail drop) and
            counted in :attr:`overflow_ms`.
        max_pending_marks: marks beyond this are dropped and counted in
            :attr:`overflow_marks`.
    """

    def __init__(
        self,
        *,
        max_queued_ms: float = DEFAULT_MAX_QUEUED_MS,
        max_pending_marks: int = DEFAULT_MAX_PENDING_MARKS,
    ) -> None:
        self._max_queued = _samples(max_queued_ms)
        self._max_marks = max_pending_marks
        self._queue: deque[bytes | _Mark] = deque()
        self._offset = 0  # bytes of the head media entry already played
        self._queued = 0  # unplayed bytes in the queue
        self._marks = 0  # marks in the queue
        self._t = 0  # timeline position up to which the buffer has played
        self._heard = bytearray()
        self._intervals: list[list[int]] = []  # merged [start, end) sample ranges that played
        self._out_marks: list[str] = []
        self._out_played: list[tuple[int, bytearray]] = []
        self.overflow_ms = 0.0
        self.overflow_marks = 0

    # -- inputs ---------------------------------------------------------

    def enqueue_media(self, now_ms: float, ulaw: bytes) -> None:
        """Queue audio received at ``now_ms``; it plays after what is queued."""
        self._play_until(_samples(now_ms))
        room = self._max_queued - self._queued
        if len(ulaw) > room:
            self.overflow_ms += (len(ulaw) - max(room, 0)) / SAMPLES_PER_MS
            ulaw = ulaw[: max(room, 0)]
        if ulaw:
            self._queue.append(bytes(ulaw))
            self._queued += len(ulaw)

    def enqueue_mark(self, now_ms: float, name: str) -> None:
        """Queue a mark; it is echoed once everything queued before it played."""
        self._play_until(_samples(now_ms))
        if not self._queued:
            # Nothing left to play: the mark's audio has "finished" already.
            self._out_marks.append(name)
            return
        if self._marks >= self._max_marks:
            self.overflow_marks += 1
            return
        self._queue.append(_Mark(name))
        self._marks += 1

    def clear(self, now_ms: float) -> float:
        """Drop unplayed audio; every pending mark becomes due at once.

        Returns:
            How many milliseconds of queued audio were dropped.
        """
        self._play_until(_samples(now_ms))
        dropped = self._queued
        for entry in self._queue:
            if isinstance(entry, _Mark):
                self._out_marks.append(entry.name)
        self._queue.clear()
        self._offset = self._queued = self._marks = 0
        return dropped / SAMPLES_PER_MS

    def advance(self, now_ms: float) -> Progress:
        """Play up to ``now_ms`` and hand out everything due since last time."""
        self._play_until(_samples(now_ms))
        progress = Progress(
            marks=tuple(self._out_marks),
            played=tuple(Played(start / SAMPLES_PER_MS, bytes(audio)) for start, audio in self._out_played),
        )
        self._out_marks.clear()
        self._out_played.clear()
        return progress

    # -- state ----------------------------------------------------------

    @property
    def queued_ms(self) -> float:
        """Audio queued and not yet played."""
        return self._queued / SAMPLES_PER_MS

    @property
    def pending_marks(self) -> int:
        return self._marks

    @property
    def position_ms(self) -> float:
        """How far the buffer has been played (the last ``now`` seen)."""
        return self._t / SAMPLES_PER_MS

    @property
    def played_ms(self) -> float:
        """Total audio that played (i.e. was heard), after clears."""
        return sum(end - start for start, end in self._intervals) / SAMPLES_PER_MS

    def played_intervals(self) -> list[tuple[float, float]]:
        """``(start_ms, end_ms)`` of every stretch where audio was playing."""
        return [(start / SAMPLES_PER_MS, end / SAMPLES_PER_MS) for start, end in self._intervals]

    def heard_ulaw(self, length_ms: float | None = None) -> bytes:
        """The heard timeline as μ-law, silence where nothing played.

        Args:
            length_ms: pad with silence or cut to exactly this length;
                default: up to the last audio that played.
        """
        heard = bytes(self._heard)
        if length_ms is None:
            return heard
        n = _samples(length_ms)
        return heard[:n] + bytes([ULAW_SILENCE]) * max(0, n - len(heard))

    # -- the rules ------------------------------------------------------

    def _play_until(self, t: int) -> None:
        if t <= self._t:
            self._echo_leading_marks()
            return
        while self._queue and self._t < t:
            head = self._queue[0]
            if isinstance(head, _Mark):
                self._pop_mark(head)
                continue
            take = min(len(head) - self._offset, t - self._t)
            self._record(self._t, head[self._offset : self._offset + take])
            self._offset += take
            self._t += take
            self._queued -= take
            if self._offset == len(head):
                self._queue.popleft()
                self._offset = 0
        self._echo_leading_marks()
        self._t = t  # idle time after the queue ran dry is silence

    def _echo_leading_marks(self) -> None:
        while self._queue and isinstance(self._queue[0], _Mark):
            self._pop_mark(self._queue[0])

    def _pop_mark(self, mark: _Mark) -> None:
        self._queue.popleft()
        self._marks -= 1
        self._out_marks.append(mark.name)

    def _record(self, start: int, audio: bytes) -> None:
        if len(self._heard) < start:
            self._heard.extend(bytes([ULAW_SILENCE]) * (start - len(self._heard)))
        self._heard.extend(audio)
        end = start + len(audio)
        if self._intervals and self._intervals[-1][1] == start:
            self._intervals[-1][1] = end
        else:
            self._intervals.append([start, end])
        if self._out_played and self._out_played[-1][0] + len(self._out_played[-1][1]) == start:
            self._out_played[-1][1].extend(audio)
        else:
            self._out_played.append((start, bytearray(audio)))
