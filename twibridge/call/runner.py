"""One phone call: a Media Streams socket bridged to one agent session.

The call's whole life reads top to bottom in :meth:`Call.run`, shaped like
trio-websocket's ``_handle_connection``: one nursery holds the reader, the
inbound pump, the agent supervisor, the paced writer and the watchdogs;
bounded channels join them; teardown runs in ``finally`` under a bounded
shield; every cancel carries a reason that the logs repeat.

* The **reader** never stops draining the socket (hypercorn stops reading a
  socket whose app does not, and then never sees the close): it parses and
  order-checks each frame, runs media through jitter, VAD and the agent's
  bounded, never-blocking buffer on the spot (µs per frame), and hands
  control events (marks, DTMF, stop) to the inbound pump over a bounded
  channel.
* The **speaker** (:mod:`twibridge.call.speaker`) plays one agent turn at a time,
  each in its own cancel scope: a barge-in cancels that scope (nothing of the
  turn is sent after it), then sends ``clear``, then the agent is told what
  was heard.
* "The peer sent garbage" (:class:`RemoteProtocolError`, a bad agent) ends
  this call with a warning; anything else is our bug: a traceback, close
  1011, and still only this call ends.
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog
import trio

from twibridge.agents.base import (
    MAX_NOTICE_CHARS, MAX_TRANSCRIPT_CHARS, AgentEvent, AgentFailed, AgentNotice, AudioOut, CallInfo,
    HangupRequest, ReplyDone, SpeechStarted, ToolCall, Transcript, TransferRequest, Usage, clip,
)
from twibridge.agents import make_failover
from twibridge.call.records_hooks import RecordsHooks
from twibridge.agents.supervisor import AgentSupervisor
from twibridge.audio.g711 import ulaw_dbfs
from twibridge.call import admission, builtins as bridge_tools
from twibridge.call.control import CallControl
from twibridge.call.jitter import JitterBuffer
from twibridge.handoff.transfer import Handoff
from twibridge.call.limits import CallStats, InboundRate, WarnLimiter
from twibridge.logs import get_logger
from twibridge.records.session import CallRecords
from twibridge.routing import percall
from twibridge.state.registry import CallRecord
from twibridge.tools.calltools import CallTools, specs
from twibridge.runtime import Runtime
from twibridge.call.edges import Edges, is_bridge_item
from twibridge.call.idle import IdleWatch
from twibridge.call.speaker import Speaker
from twibridge.call.summary import summarize
from twibridge.twilio import protocol as tw
from twibridge.audio.vad import SpeechEnded, TurnDetector, SpeechStarted as VadSpeechStarted

log = get_logger("twibridge.call")

#: A Twilio stream sends ``start`` at once; a socket that does not is not Twilio.
START_TIMEOUT_S = admission.START_TIMEOUT_S
#: Close codes: normal, going away (shutdown), policy (peer broke protocol), our error.
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_ERROR = 1000, 1001, 1008, 1011


class Transport(Protocol):
    """The socket as the call sees it (Quart's websocket, or trio-websocket)."""

    async def receive(self) -> str | bytes: ...
    async def send(self, data: str) -> None: ...
    async def close(self, code: int, reason: str = "") -> None: ...


class _Ended(Exception):
    """Raised inside the call to end it with an outcome (not an error)."""


class Call(RecordsHooks):
    """Runs one Media Streams connection from ``start`` to teardown."""

    def __init__(self, transport: Transport, rt: Runtime, remote: str = "",
                 prestart: admission.PreStartTicket | None = None) -> None:
        self.t = transport
        self.rt = rt
        self.cfg = rt.config
        self.remote = remote
        self.prestart = prestart  # the pre-start slot this socket holds until ``start``
        self.stats = CallStats()
        self.warn = WarnLimiter()  # warnings a peer can trigger: the first few per kind, then counted
        self.rate = InboundRate()
        self.state = tw.StreamState()
        self.jitter = JitterBuffer(self.cfg.turns.jitter_window_ms)
        tcfg = self.cfg.turns
        self.vad = TurnDetector(vad_threshold=tcfg.vad_threshold, debounce_ms=tcfg.debounce_ms,
                                end_of_turn_ms=tcfg.end_of_turn_ms, echo_margin_db=tcfg.echo_margin_db)
        self.speaker = Speaker(tcfg, self.t.send, trio.Lock())
        self.speaker.warnings = self.warn
        self.idle = IdleWatch(self.cfg.calls.idle_prompt_s, self.cfg.calls.idle_prompts)
        self.edges = Edges(self.speaker, self.idle)
        self.outcome: str | None = None
        self.reason = ""
        self.close_code = CLOSE_NORMAL
        self.start: tw.Start | None = None
        self.info: CallInfo | None = None
        self.route: int | None = None  # the index of the route that decided, in this call's config
        self.agent: AgentSupervisor | None = None
        self.control: CallControl | None = None
        self.tools: CallTools | None = None
        self._scope = trio.CancelScope()
        self._in_send, self._in_recv = trio.open_memory_channel[tw.TwilioEvent](self.cfg.calls.inbound_queue_frames)
        self.transferring = False  # a transfer ends the stream: its stop is no hang-up
        self._last_media = trio.current_time()
        self._started_at = trio.current_time()
        self.records = CallRecords(self.cfg, self._started_at)  # transcript, report, recording
        self.agent_name = "default"  # the agent profile (routing may set it): the report's ``agent``
        self.handoff = Handoff(self, rt.sounds.get("hold"))  # transfers to a human: cold or warm

    # ------------------------------------------------------------------ life

    async def run(self) -> None:
        """The call, start to end.  Never raises (except Cancelled from above)."""
        registered = False
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader)
                    registered = await self._admit(await self._await_start())
                    self.edges.on_start(self.rt.sounds.get("greeting"))
                    nursery.start_soon(self._watchdogs)
                    nursery.start_soon(self.edges.check_ins, self)
                    nursery.start_soon(self._idle_watch)
                    nursery.start_soon(self.speaker.run)
                    await nursery.start(self.tools.run)  # type: ignore[union-attr]  # made by _prepare
                    nursery.start_soon(self.records.run_recording)
                    nursery.start_soon(self._agent_task)
                    nursery.start_soon(self.handoff.run)
                    await self._inbound()
        except* _Ended:
            pass
        except* tw.RemoteProtocolError as eg:
            self._set_outcome("protocol-error", str(eg.exceptions[0]), CLOSE_POLICY)
            log.warning("call.bad_peer_data", reason=self.reason, remote=self.remote)
        except* AgentFailed as eg:
            self._set_outcome("agent-failed", str(eg.exceptions[0]), CLOSE_NORMAL)
            log.warning("call.agent_failed", reason=self.reason)
            if self.control is not None:
                await self.control.fallback()
        except* Exception:
            self._set_outcome("error", "internal error", CLOSE_ERROR)
            log.exception("call.internal_error")
        finally:
            await self._teardown(registered)

    def _set_outcome(self, outcome: str, reason: str, code: int = CLOSE_NORMAL) -> None:
        if self.outcome is None:
            self.outcome, self.reason, self.close_code = outcome, reason, code

    def end(self, outcome: str, reason: str, code: int = CLOSE_NORMAL) -> None:
        """End the call (from any task): the whole nursery is cancelled."""
        self._set_outcome(outcome, reason, code)
        self._scope.cancel(reason=f"{outcome}: {reason}")

    async def _await_start(self) -> tw.Start:
        """Until ``start`` (bounded): the socket is no call yet, and not counted as one."""
        self.rt.pending += 1
        try:
            with trio.move_on_after(START_TIMEOUT_S):
                async for ev in self._in_recv:
                    if isinstance(ev, tw.Start):
                        return ev
            raise tw.RemoteProtocolError(f"no start event within {START_TIMEOUT_S:g} s")
        finally:
            if self.prestart is not None:
                self.prestart.release()
            self.rt.pending -= 1
            self.rt.notify_calls_changed()  # the drain waits on rt.active, pending included

    def _prepare(self, start: tw.Start) -> None:
        """Everything the media path needs, in place before the first frame after ``start``."""
        self.start = start
        self.speaker.stream_sid = start.stream_sid
        p = start.custom_parameters
        # The agent /voice routed to, templates rendered, the route's fallback: this call's own config.
        self.cfg, routed, params = percall.prepare(self.cfg, p, start.call_sid)
        self.route, self.agent_name = routed.route, routed.agent
        self.control = CallControl(self.cfg, start.call_sid, trusted=admission.trusted(self.rt))
        recording = (self.pause_recording, self.resume_recording) if self.cfg.recording.enabled else None
        builtins = bridge_tools.call_builtins(self.edges.send_dtmf, recording)  # send_dtmf, pause/resume
        self.info = CallInfo(call_sid=start.call_sid, stream_sid=start.stream_sid, account_sid=start.account_sid,
                             from_number=p.get("From", ""), to_number=p.get("To", ""), params=params,
                             tools=specs(self.cfg.tools, builtins), greeting=self.cfg.agent.greeting,
                             agent=routed.agent, variables=routed.variables)
        # Created now so caller audio buffers (bounded) while it connects.
        self.agent = AgentSupervisor(self.rt.provider(self.cfg), self.info, self.cfg.agent, self._agent_event,
                                     failover=make_failover(self.cfg))
        self.tools = CallTools(self.cfg.tools, self.info, self.agent.send_tool_result, player=self.speaker,
                               metrics=self.rt.metrics, builtins=builtins, on_done=self.tool_done)
        self._last_media = trio.current_time()
        self.records.started(self._last_media, start.call_sid, self.speaker)

    async def _admit(self, start: tw.Start) -> bool:
        """The checks at ``start`` (:mod:`twibridge.call.admission`: account, stream token,
        max_calls, one live stream per CallSid) before any agent connects; then the call is live."""
        assert self.info is not None
        structlog.contextvars.bind_contextvars(call_sid=start.call_sid, stream_sid=start.stream_sid)
        try:
            await admission.admit(self.rt, start, self.remote)
            await admission.claim(self.rt, CallRecord(start.call_sid, start.stream_sid, self.info.from_number,
                                                      self.info.to_number), self.remote)
        except admission.Refused as r:
            self._set_outcome(r.outcome, r.reason, r.code)
            if r.fallback and self.control is not None:
                await self.control.fallback()
            raise _Ended from None
        self.rt.calls[start.call_sid] = self
        self.rt.notify_calls_changed()
        log.info("call.started", remote=self.remote, from_number=self.info.from_number,
                 to_number=self.info.to_number, agent=self.info.agent, provider=self.cfg.agent.provider)
        return True

    async def _teardown(self, registered: bool) -> None:
        self._set_outcome("caller-dropped", "socket closed without stop")
        with trio.move_on_after(self.cfg.calls.teardown_timeout_s, shield=True):
            try:
                await self.t.close(self.close_code, self.reason[:120])
            except Exception:  # already closed by the peer: nothing to do
                pass
        if registered and self.start is not None:
            summary = self.summary()
            with trio.move_on_after(self.cfg.calls.teardown_timeout_s, shield=True):
                # The transcript (redacted) goes to the registry's history and the
                # report only, never into the log line: it is the caller's speech.
                await self.file_records(summary)
            self.rt.calls.pop(self.start.call_sid, None)
            self.rt.notify_calls_changed()
            if self.rt.metrics is not None:
                self.rt.metrics.call_ended(summary, self.speaker.stats.reply_latency_ms,
                                           self.speaker.stats.clear_latency_ms)
            log.info("call.ended", **summary)
        elif self.outcome is not None and self.outcome.startswith("refused-") and self.rt.metrics is not None:
            self.rt.metrics.refused(self.outcome.removeprefix("refused-"))
        structlog.contextvars.unbind_contextvars("call_sid", "stream_sid")

    @property
    def inbound_depth(self) -> int:
        """Frames waiting in this call's inbound channel and jitter buffer."""
        return self._in_send.statistics().current_buffer_used + self.jitter.depth

    def summary(self) -> dict[str, Any]:
        """The ``call.ended`` line's fields (call/summary.py)."""
        return summarize(self)

    # ---------------------------------------------------------------- inbound

    async def _reader(self) -> None:
        """Drain the socket; handle media on the spot, queue the rest (bounded).

        Media (50 frames/s) goes straight through jitter, VAD and the agent's
        non-blocking buffer here: a few µs per frame, and one task hop fewer
        per frame (measured ~10 % of server CPU at 100 calls).  Control events
        (marks, DTMF, stop) go to the inbound pump.
        """
        max_bytes = self.cfg.server.max_message_bytes
        while True:
            raw = await self.t.receive()
            if len(raw) > max_bytes:
                raise tw.RemoteProtocolError(f"message too large ({len(raw)} bytes, cap {max_bytes})")
            ev = self.state.receive(tw.parse_from_twilio(raw))
            if isinstance(ev, tw.Media):
                now = self._last_media = trio.current_time()
                self.stats.frames_in += 1
                if not self.rate.take(now):  # faster than a phone call: dropped, counted
                    if self.rate.abusive:
                        raise tw.RemoteProtocolError("caller media far faster than real time")
                    if self.warn.allow("inbound_over_rate"):
                        log.warning("call.inbound_over_rate", dropped=self.rate.dropped)
                    continue
                for frame in self.jitter.push(ev.sequence_number, ev.timestamp, ev.payload, now * 1000):
                    await self._caller_audio(frame.t_ms, frame.payload)
            elif isinstance(ev, tw.Unknown):
                if self.start is None:  # before start, only connected/start belong
                    raise tw.RemoteProtocolError(f"{ev.event[:40]!r} event before start")
                self.stats.unknown_events += 1  # logged once per call, counted in the summary
                if self.stats.unknown_events == 1:
                    log.info("call.unknown_event", twilio_event=ev.event[:40])
            else:
                if isinstance(ev, tw.Start):
                    admission.check_identity(ev)
                    self._prepare(ev)
                if isinstance(ev, tw.Stop):
                    # Recorded at once: the socket's close may cancel us before
                    # the inbound pump gets to it.
                    if self.transferring:
                        self._set_outcome("transferred", "stop after transfer")
                    self._set_outcome("completed", "stop from Twilio")
                await self._in_send.send(ev)
                if isinstance(ev, tw.Stop):
                    return

    async def _inbound(self) -> None:
        """Control events in order: mark echoes, DTMF, stop."""
        async for ev in self._in_recv:
            if isinstance(ev, tw.Mark):
                await self._mark_echoed(ev.name)
            elif isinstance(ev, tw.Dtmf):
                log.info("call.dtmf", digit=ev.digit, recording=self.records.dtmf(ev.digit, trio.current_time()))
                if self.agent is not None:
                    await self.agent.send_dtmf(ev.digit)
            elif isinstance(ev, tw.Stop):
                self.end("completed", "stop from Twilio")

    async def _idle_watch(self) -> None:
        """End the call after ``idle_timeout_s`` without media (the stale-session purge)."""
        idle = self.cfg.calls.idle_timeout_s
        while trio.current_time() < self._last_media + idle:
            await trio.sleep_until(self._last_media + idle)
        self.end("idle-timeout", f"no media for {idle:g}s")

    async def _caller_audio(self, t_ms: int, frame: bytes) -> None:
        self.records.caller_audio(t_ms, frame)
        if self.agent is not None and not self.speaker.held:  # on hold, the agent hears nothing
            self.agent.push_audio(frame)
        now = trio.current_time()
        speaking = self.speaker.speaking(now)
        ev = self.vad.feed(ulaw_dbfs(frame), t_ms, self.speaker.playout.agent_level(now) if speaking else None)
        if isinstance(ev, VadSpeechStarted):
            self.idle.touch(now)
            self.records.event(now, "caller_speech", audio_ms=t_ms)
            self.speaker.caller_end_at = None
            if speaking and self.cfg.turns.barge_in in ("local", "both"):
                await self.barge_in("local-vad", now, audio_ms=t_ms + tw.FRAME_MS)
        elif isinstance(ev, SpeechEnded):
            # The turn ended ``end_of_turn_ms`` of audio ago, in wall time too.
            self.speaker.caller_end_at = now - (t_ms + tw.FRAME_MS - ev.end_ms) / 1000
            self.idle.touch(self.speaker.caller_end_at)
            self.records.event(self.speaker.caller_end_at, "caller_turn_end")

    async def _mark_echoed(self, name: str) -> None:
        echo = self.speaker.playout.on_mark(name, trio.current_time())
        if echo is None or echo.stale:
            return
        self.records.event(trio.current_time(), "mark", turn=echo.turn, ms=echo.ms)
        tp = self.speaker.playout.turns.get(echo.turn)
        if tp is not None and tp.fully_played:
            self.idle.touch(trio.current_time())  # heard to its end: quiet counts from now
        if tp is not None and self.agent is not None and tp.item_id and not is_bridge_item(tp.item_id):
            await self.agent.mark_played(tp.item_id, tp.played_ms)
            if tp.fully_played:
                log.debug("call.agent_finished_speaking", turn=tp.turn, played_ms=tp.played_ms)

    # ----------------------------------------------------------------- agent

    async def _agent_task(self) -> None:
        assert self.agent is not None
        await self.agent.run()

    async def _agent_event(self, ev: AgentEvent) -> None:
        if isinstance(ev, AudioOut):
            self.records.reply_audio(ev.item_id, trio.current_time(), self.speaker.caller_end_at)
            self.speaker.on_audio(ev)
        elif isinstance(ev, ReplyDone):
            self.speaker.on_reply_done(ev)
        elif isinstance(ev, SpeechStarted):
            if self.cfg.turns.barge_in in ("provider", "both"):
                await self.barge_in("provider", trio.current_time())
        elif isinstance(ev, ToolCall) and self.tools is not None:
            self.tools.submit(ev)  # never waits: tools run in the call's nursery, bounded
        elif isinstance(ev, (Transcript, Usage)):
            self.on_record(ev)  # redacted there, before any copy exists (log, registry, report)
        elif isinstance(ev, AgentNotice):
            if self.warn.allow("agent_notice"):
                log.warning("call.agent_notice", message=clip(ev.message, MAX_NOTICE_CHARS), code=clip(ev.code, 64))
        elif isinstance(ev, HangupRequest):
            await self.speaker.wait_played()  # let the goodbye finish
            self._set_outcome("agent-hangup", ev.reason)
            assert self.control is not None
            await self.control.hangup()
            self.end("agent-hangup", ev.reason)
        elif isinstance(ev, TransferRequest):
            self.handoff.submit(ev)  # never waits: the call's transfer task runs it (cold or warm)

    async def barge_in(self, trigger: str, trigger_at: float, audio_ms: int | None = None) -> None:
        """The caller talks over the agent: stop, clear Twilio, tell the agent.

        ``audio_ms``: the stream time of the audio that triggered it (local VAD).
        """
        cut = await self.speaker.barge_in(trigger, trigger_at)
        if cut is None:
            return
        self.records.event(trigger_at, "barge_in", trigger=trigger, item_id=cut.item_id, heard_ms=cut.heard_ms,
                           clear_latency_ms=round(cut.clear_latency_ms, 2))
        log.info("call.barge_in", trigger=trigger, heard_ms=cut.heard_ms, sent_ms=cut.sent_ms,
                 discarded_ms=cut.discarded_ms, item_id=cut.item_id, audio_ms=audio_ms,
                 clear_latency_ms=round(cut.clear_latency_ms, 2))
        if self.agent is not None and cut.item_id and not is_bridge_item(cut.item_id):
            await self.agent.interrupt(cut.item_id, cut.heard_ms)

    # -------------------------------------------------------------- watchdogs

    async def _watchdogs(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._refresh_record)
            with trio.move_on_after(self.cfg.calls.max_duration_s):
                await self.rt.drained.wait()
                self.end("shutdown", "server shutting down", CLOSE_GOING_AWAY)
            self.end("max-duration", f"call longer than {self.cfg.calls.max_duration_s:g}s")

    async def _refresh_record(self) -> None:
        """Keep the registry's live record from expiring while the call lives."""
        assert self.start is not None
        period = self.cfg.state.record_ttl_s / 3
        while True:
            await trio.sleep(period)
            with trio.move_on_after(self.cfg.state.timeout_s):
                await self.rt.registry.refresh(self.start.call_sid)
