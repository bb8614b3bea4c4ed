"""One call's records, as the call runner sees them: a few small hooks, one report.

:class:`CallRecords` is what ``call/runner.py`` holds per call.  Each hook is
a few dictionary operations (no I/O, no awaiting) so the media path pays
nothing: caller audio and the agent's played audio go to the recording's
bounded queue (:mod:`twibridge.records.recording`), transcript lines are
redacted and kept, and teardown turns it all into the ``call_ended`` report.

Times are ms since the stream's ``start`` (the recording's timeline too).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Mapping, Sequence

import trio

from twibridge.config import Config
from twibridge.logs import get_logger
from twibridge.records.journal import Journal
from twibridge.records.recording import Recording
from twibridge.records.redact import Redactor
from twibridge.records.report import build_report
from twibridge.records.spool import atomic_write

log = get_logger("twibridge.records.session")


class CallRecords:
    def __init__(self, cfg: Config, now: float) -> None:
        self.cfg = cfg
        self.journal = Journal(Redactor(cfg.redact.patterns, cfg.redact.extra))
        self.t0 = now  # trio time of ``start`` (reset by :meth:`started`)
        self.wall0 = time.time()
        self._reply_first: dict[str, int] = {}
        self.transfer_to: str | None = None
        #: Every transfer attempt: ``{mode, to, outcome, ring_ms}`` (twibridge/handoff/transfer.py).
        self.transfers: list[dict[str, Any]] = []
        self.turns = 0  # agent replies (each reply's first audio counts one)
        self.recording: Recording | None = None
        self._digits: list[tuple[str, float]] = []
        self.recording_path: str | None = None

    def started(self, now: float, call_sid: str, speaker: Any) -> None:
        """``start`` arrived: the timeline begins; the recording (if on) is set up and tapped
        into the speaker (``speaker.tap.played`` / ``.cleared``)."""
        self.t0, self.wall0 = now, time.time()
        if self.cfg.recording.enabled:
            self.recording = Recording(self.cfg.recording, call_sid, now, self.wall0)
            self.recording_path = str(self.recording.path)
            speaker.tap = self.recording

    async def run_recording(self) -> None:
        """The recording's writer task (in the call's nursery); nothing without a recording."""
        if self.recording is not None:
            await self.recording.run()

    def caller_audio(self, t_ms: int, frame: bytes) -> None:
        if self.recording is not None:
            self.recording.caller(t_ms, frame)

    # -- pause / resume ------------------------------------------------------

    def pause(self, now: float) -> bool:
        """Pause the recording (silence in both channels from now on); False if off or paused."""
        t = self.t_ms(now)
        if self.recording is None or not self.journal.pause(t):
            return False
        self.recording.pause(t)
        self.journal.event(t, "recording_paused")
        return True

    def resume(self, now: float) -> bool:
        t = self.t_ms(now)
        if self.recording is None or not self.journal.resume(t):
            return False
        self.recording.resume(t)
        self.journal.event(t, "recording_resumed")
        return True

    def dtmf(self, digit: str, now: float, window_s: float = 2.0) -> str | None:
        """Track keys; ``[recording] pause_digits`` pressed in a row (each within ``window_s``)
        toggles the recording: "paused" / "resumed", or None."""
        seq = self.cfg.recording.pause_digits
        if not seq or self.recording is None:
            return None
        self._digits = [(d, t) for d, t in self._digits if now - t <= window_s][-(len(seq) - 1):] if len(seq) > 1 \
            else []
        self._digits.append((digit, now))
        if "".join(d for d, _ in self._digits) != seq:
            return None
        self._digits = []
        if self.journal.paused:
            return "resumed" if self.resume(now) else None
        return "paused" if self.pause(now) else None

    def t_ms(self, now: float) -> int:
        return int((now - self.t0) * 1000)

    # -- hooks -------------------------------------------------------------

    def reply_audio(self, item_id: str, now: float, caller_end_at: float | None) -> None:
        """An agent audio chunk arrived; the first of a reply marks it (and its latency)."""
        if item_id in self._reply_first:
            return
        t = self.t_ms(now)
        self.turns += 1
        self._reply_first[item_id] = t
        if len(self._reply_first) > 512:
            self._reply_first.pop(next(iter(self._reply_first)))
        if caller_end_at is not None:
            self.journal.first_audio_ms.append((now - caller_end_at) * 1000)
        self.journal.event(t, "reply", item_id=item_id)

    def transcript(self, role: str, text: str, now: float, *, t_ms: int | None = None, item_id: str = "",
                   truncated: bool = False) -> dict[str, Any] | None:
        """A final transcript line, redacted; the entry kept (None when nothing was kept)."""
        if truncated and self.journal.replace_transcript(item_id, text):
            return None
        if t_ms is None:
            t_ms = self._reply_first.get(item_id, self.t_ms(now)) if item_id else self.t_ms(now)
        return self.journal.add_transcript(role, text, t_ms, item_id)

    def event(self, now: float, kind: str, **data: Any) -> None:
        self.journal.event(self.t_ms(now), kind, **data)

    def tool_done(self, name: str, duration_ms: float, outcome: str, now: float) -> None:
        """A tool call finished (the tools executor calls this through the call)."""
        self.journal.tool(name, duration_ms, outcome, self.t_ms(now))

    def usage(self, counts: Mapping[str, Any]) -> None:
        self.journal.add_usage(counts)

    # -- the end -----------------------------------------------------------

    def report(self, *, ids: Mapping[str, str], agent: str, outcome: str | None, reason: str, now: float,
               turns: int, barge_ins: int, reply_latency_ms: Sequence[float],
               params: Mapping[str, str]) -> dict[str, Any]:
        duration = max(0.0, now - self.t0)
        end_ms = self.t_ms(now)
        return build_report(
            ids=ids, agent=agent, provider=self.cfg.agent.provider, started_at=self.wall0,
            ended_at=self.wall0 + duration, outcome=outcome, reason=reason, transfer_to=self.transfer_to,
            transfers=self.transfers,
            turns=turns, barge_ins=barge_ins, reply_latency_ms=reply_latency_ms,
            first_audio_ms=self.journal.first_audio_ms, transcript=self.journal.transcript,
            tools=self.journal.tools, recording=self.recording_path,
            recording_pauses=self.journal.closed_pauses(end_ms),
            usage={"minutes": round(duration / 60, 3), "billed_minutes": math.ceil(duration / 60),
                   "provider": self.journal.usage},
            params=params)

    async def write_report_file(self, report: Mapping[str, Any]) -> None:
        """``<CallSid>.json`` beside the recording (0600): the report and its timeline."""
        if self.recording is None:
            return
        path = self.recording.path.with_suffix(".json")
        data = json.dumps({"report": report, "timeline": self.timeline()}, ensure_ascii=False).encode("utf-8")
        try:
            await trio.to_thread.run_sync(atomic_write, path, data)
        except OSError as exc:
            log.warning("records.report_file_failed", file=str(path), error=exc.strerror or type(exc).__name__)

    def timeline(self) -> list[dict[str, Any]]:
        """The call's events for ``calls show --html`` (kept with the report, never sent)."""
        return list(self.journal.events)
