"""Voice activity and end of turn, sans-IO, in audio time.

Fed one frame level (dBFS, computed from μ-law by a table) and that frame's
audio timestamp; returns at most one event.  No clock, no I/O: time is what
the media timestamps say, so tests feed numbers and get exact answers.

Knobs (``[turns]``):

* ``vad_threshold`` 0..1 maps linearly onto a level threshold,
  ``-60 dBFS + 50 dB × threshold``: 0.5 → -35 dBFS (above a typical noisy
  line's floor of about -40 dBFS), 0.3 → -45 dBFS for quiet lines.
* ``debounce_ms``: speech must last this long (short dips of up to
  :data:`MAX_DIP_MS` allowed) before it counts, so "uh", a click or a door
  slam never interrupts the agent.
* ``end_of_turn_ms``: this much quiet after speech ends the caller's turn.
* ``echo_margin_db``: while the agent is speaking, a frame only counts as the
  caller if it is louder than the agent's own recent output minus this
  margin — echo on a speakerphone comes back attenuated by at least that
  much (default 10 dB), so the agent does not interrupt itself, while a
  caller talking over it at a normal level still does.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Quiet within speech (between words) shorter than this does not reset the
#: debounce count: speech pauses 100-200 ms between words (and frames of it
#: fall under the echo gate), while a door slam or a cough is one short
#: burst whose voiced time never reaches the debounce.
MAX_DIP_MS = 250


def threshold_dbfs(vad_threshold: float) -> float:
    """Map the 0..1 ``vad_threshold`` knob onto a frame level in dBFS."""
    return -60.0 + 50.0 * vad_threshold


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech has lasted ``debounce_ms``: a real caller turn (and a barge-in
    if the agent is talking).  ``start_ms`` is the first voiced frame."""

    start_ms: int
    confirmed_ms: int


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """End of the caller's turn: ``end_of_turn_ms`` of quiet after speech."""

    start_ms: int
    end_ms: int


VadEvent = SpeechStarted | SpeechEnded


class TurnDetector:
    """Debounced energy VAD with echo gating, one per call direction."""

    def __init__(
        self,
        *,
        vad_threshold: float = 0.5,
        debounce_ms: int = 300,
        end_of_turn_ms: int = 500,
        echo_margin_db: float = 10.0,
        frame_ms: int = 20,
    ) -> None:
        self.threshold_db = threshold_dbfs(vad_threshold)
        self.debounce_ms = debounce_ms
        self.end_of_turn_ms = end_of_turn_ms
        self.echo_margin_db = echo_margin_db
        self.frame_ms = frame_ms
        self._cand_start: int | None = None  # first voiced frame of a candidate
        self._voiced_ms = 0
        self._last_voiced_end: int | None = None
        self._speaking = False  # confirmed speech in progress
        self._start_ms = 0

    @property
    def in_speech(self) -> bool:
        return self._speaking

    def is_voiced(self, level_dbfs: float, agent_dbfs: float | None = None) -> bool:
        if level_dbfs < self.threshold_db:
            return False
        if agent_dbfs is not None and level_dbfs < agent_dbfs - self.echo_margin_db:
            return False  # no louder than the agent's own echo would be
        return True

    def feed(self, level_dbfs: float, t_ms: int, agent_dbfs: float | None = None) -> VadEvent | None:
        """Feed the level of the frame starting at audio time ``t_ms``.

        Args:
            level_dbfs: the frame's level.
            t_ms: the frame's start in stream audio time.
            agent_dbfs: the agent's output level now playing at the caller,
                or None when the agent is silent.
        """
        end = t_ms + self.frame_ms
        if self.is_voiced(level_dbfs, agent_dbfs):
            if self._cand_start is None or (
                self._last_voiced_end is not None and t_ms - self._last_voiced_end > MAX_DIP_MS
                and not self._speaking
            ):
                self._cand_start, self._voiced_ms = t_ms, 0
            self._voiced_ms += self.frame_ms
            self._last_voiced_end = end
            if not self._speaking and self._voiced_ms >= self.debounce_ms:
                self._speaking = True
                self._start_ms = self._cand_start
                return SpeechStarted(start_ms=self._cand_start, confirmed_ms=end)
            return None
        last = self._last_voiced_end
        if self._speaking and last is not None and end - last >= self.end_of_turn_ms:
            self._speaking = False
            self._cand_start = None
            return SpeechEnded(start_ms=self._start_ms, end_ms=last)
        if not self._speaking and last is not None and end - last > MAX_DIP_MS:
            self._cand_start = None  # a burst too short to count: forget it
        return None
