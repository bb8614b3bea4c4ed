"""The call's side of its records: transcript and usage events, the report, the recording's controls.

A mixin of :class:`twibridge.call.runner.Call`, kept apart so the call's life
still reads top to bottom in ``runner.py`` while what it leaves behind
(``twibridge/records/``) is wired here: each hook is a few dictionary
operations, never I/O on the media path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from twibridge.agents.base import CallInfo, Transcript, Usage
from twibridge.logs import get_logger
from twibridge.records.session import CallRecords
from twibridge.twilio import protocol as tw

if TYPE_CHECKING:
    from twibridge.call.speaker import Speaker
    from twibridge.runtime import Runtime
    from twibridge.tools.executor import ToolOutcome

log = get_logger("twibridge.call.runner")


class RecordsHooks:
    # Provided by Call.
    rt: Runtime
    start: tw.Start | None
    info: CallInfo | None
    speaker: Speaker
    records: CallRecords
    outcome: str | None
    reason: str
    agent_name: str
    stats: Any

    def on_record(self, ev: Transcript | Usage) -> None:
        """A transcript line (redacted here, before any copy of it exists) or a usage report."""
        if isinstance(ev, Usage):
            self.records.usage(ev.counts)
            return
        kept = self.records.transcript(ev.role, ev.text, trio.current_time(), t_ms=ev.t_ms, item_id=ev.item_id,
                                       truncated=ev.truncated)
        if kept is not None:
            self.stats.transcript.add(kept["role"], kept["text"])  # bounded (call/limits.py)
            log.debug("call.transcript", role=kept["role"], text=kept["text"], t_ms=kept["t_ms"])

    def tool_done(self, outcome: ToolOutcome) -> None:
        """A tool call finished: the report's ``tools`` ({name, duration_ms, outcome}) and timeline."""
        self.records.tool_done(outcome.name, outcome.duration_s * 1000, outcome.outcome, trio.current_time())

    # -- built-in tools: the tools executor calls these (pause while a card number is read out) --

    async def pause_recording(self) -> dict[str, Any]:
        """Built-in tool ``pause_recording``: silence in both channels until resumed (listed in the report)."""
        return self._recording_result(self.records.pause(trio.current_time()), "paused")

    async def resume_recording(self) -> dict[str, Any]:
        """Built-in tool ``resume_recording``."""
        return self._recording_result(self.records.resume(trio.current_time()), "recording")

    def _recording_result(self, changed: bool, status: str) -> dict[str, Any]:
        if self.records.recording is None:
            return {"ok": False, "error": "this call is not being recorded"}
        log.info("call.recording", status=status if changed else "unchanged")
        return {"ok": True, "status": status if changed else f"already {status}"}

    def report(self) -> dict[str, Any]:
        """The ``call_ended`` report (twibridge/records/report.py)."""
        assert self.start is not None and self.info is not None
        sp = self.speaker.stats
        return self.records.report(
            ids={"call_sid": self.start.call_sid, "stream_sid": self.start.stream_sid,
                 "account_sid": self.start.account_sid, "from": self.info.from_number, "to": self.info.to_number},
            agent=self.agent_name, outcome=self.outcome, reason=self.reason, now=trio.current_time(),
            turns=self.records.turns, barge_ins=sp.barge_ins, reply_latency_ms=sp.reply_latency_ms,
            params=dict(self.info.params))

    async def file_records(self, summary: dict[str, Any]) -> None:
        """Teardown: the summary (with transcript, report, timeline) to the registry, the report
        to the spool (fsync'd before this returns) for delivery."""
        assert self.start is not None
        report = self.report()
        if self.rt.deliveries is not None:  # first: the one copy that must not be lost
            await self.rt.deliveries.submit(self.start.call_sid, report)
        if self.records.recording is not None:  # beside the WAV: for ``calls show`` without Redis
            await self.records.write_report_file(report)
        # Caller transcripts stay in memory / Redis only with [state] keep_transcripts (issue #23).
        keep = self.rt.config.state.keep_transcripts
        kept = {"transcript": list(self.stats.transcript.entries)} if keep else {}
        stored = report if keep else {**report, "transcript": []}
        await self.rt.registry.unregister(self.start.call_sid, {
            **summary, **kept, "report": stored, "timeline": self.records.timeline()})
