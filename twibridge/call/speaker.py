"""The agent's voice on one call: queued replies, paced out, cut off on barge-in.

One turn at a time, by structure: :meth:`Speaker.run` takes the next reply
only after the previous one's cancel scope has ended (the seed's
``isProcessing`` lock, without a lock).  Each reply is sent by one task in
its own cancel scope; :meth:`Speaker.barge_in` cancels that scope *with a
reason* — nothing of the turn is sent after it, since every send holds the
socket's lock and the ``clear`` queues behind it — then sends ``clear``
(shielded, bounded) and resets the playout clock.

Pacing is :class:`~twibridge.call.playout.Playout`'s: absolute deadlines on one
clock per call, at most ``outbound_lead_ms`` queued at Twilio, 100 ms chunks
each followed by a mark (per-message cost, not bytes, limits how many calls
one process holds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import trio

from twibridge.agents.base import AudioOut, ReplyDone
from twibridge.audio.g711 import ulaw_dbfs
from twibridge.config import TurnsConfig
from twibridge.logs import get_logger
from twibridge.call.playout import Playout, TurnPlayout
from twibridge.call.replies import ReplyBuffer
from twibridge.twilio import protocol as tw

log = get_logger("twibridge.call.speaker")

#: Replies queued behind the one playing (bounded; more is a runaway agent).
MAX_QUEUED_REPLIES = 8
#: Send what we have rather than let Twilio's queue run dry for want of a full chunk.
UNDERRUN_GUARD_S = 0.04
#: A reply's first chunk waits up to one chunk's duration for a full chunk.
#: An agent that streams at real-time speed (a streaming TTS) would otherwise
#: go out as one 20 ms message plus a mark per frame — 5x the messages, the
#: cost that limits calls per process: the lead built here is what later
#: chunks are made of (about chunk - guard).  Faster-than-real-time agents
#: (OpenAI, VAPI, the echo agent) fill a chunk at once and never wait.
#: Marks are the truth about playout; the clock plus this slack (the echo path's
#: delay, lost marks) is the backstop for "is the agent still talking".
SPEAKING_SLACK_S = 0.5


@dataclass
class SpeakerStats:
    messages_out: int = 0
    audio_out_ms: int = 0
    barge_ins: int = 0
    discarded_ms: int = 0
    reply_dropped_bytes: int = 0
    clear_latency_ms: list[float] = field(default_factory=list)
    reply_latency_ms: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Cut:
    """What a barge-in interrupted: the agent is told ``heard_ms`` of ``item_id``."""

    item_id: str
    heard_ms: int
    sent_ms: int
    discarded_ms: int
    clear_latency_ms: float


class Speaker:
    def __init__(self, cfg: TurnsConfig, send: Callable[[str], Awaitable[None]], send_lock: trio.Lock) -> None:
        self.playout = Playout(cfg.outbound_lead_ms)
        self.stats = SpeakerStats()
        self.stream_sid = ""
        self._send = send
        self._lock = send_lock
        self._chunk_bytes = cfg.chunk_ms * tw.BYTES_PER_MS
        self._turn_send, self._turn_recv = trio.open_memory_channel[ReplyBuffer](MAX_QUEUED_REPLIES)
        self._filling: ReplyBuffer | None = None
        self._queued: list[ReplyBuffer] = []
        self._cancelled: set[str] = set()
        self._current: tuple[ReplyBuffer, TurnPlayout, trio.CancelScope] | None = None
        self._last_turn: TurnPlayout | None = None
        self._turn_no = 0
        #: Wall time the caller stopped talking, for reply latency (set by the call).
        self.caller_end_at: float | None = None
        self.tap: Any = None  # the recording: .played(at, ulaw) per chunk sent, .cleared(at) per clear

    # -- fed by the agent ----------------------------------------------------

    def on_audio(self, ev: AudioOut) -> None:
        """Queue reply audio; never waits (the writer drains at real time)."""
        if ev.item_id in self._cancelled:
            return  # late audio of a reply the caller already cut off
        buf = self._filling
        if buf is None or buf.item_id != ev.item_id:
            if buf is not None:
                buf.finish()
            buf = self._filling = ReplyBuffer(ev.item_id)
            try:
                self._turn_send.send_nowait(buf)
            except trio.WouldBlock:
                log.warning("speaker.reply_dropped", item_id=ev.item_id, reason="too many queued replies")
                self._cancelled.add(ev.item_id)
                self._filling = None
                return
            self._queued.append(buf)
        buf.append(ev.ulaw)

    def on_reply_done(self, ev: ReplyDone) -> None:
        if self._filling is not None and self._filling.item_id == ev.item_id:
            self._filling.finish()
            self._filling = None

    # -- state -----------------------------------------------------------------

    def speaking(self, now: float) -> bool:
        """Is the agent audible (or about to be) at the caller?"""
        if self._current is not None or self.playout.buffered_ms(now) > 0:
            return True
        last = self._last_turn
        return (last is not None and not last.cancelled and not last.fully_played
                and now < self.playout.play_end + SPEAKING_SLACK_S)

    def idle(self, now: float) -> bool:
        return self._current is None and not self._queued and not self.speaking(now)

    # -- the writer task -------------------------------------------------------

    async def run(self) -> None:
        """Play queued replies one at a time, each in its own cancel scope."""
        async for buf in self._turn_recv:
            if buf.item_id in self._cancelled:
                self._queued.remove(buf)
                continue
            self._turn_no += 1
            tp = self._last_turn = self.playout.new_turn(self._turn_no, buf.item_id)
            with trio.CancelScope() as scope:
                self._current = (buf, tp, scope)
                try:
                    await self._play(buf, tp)
                finally:
                    self._current = None
                    self._queued.remove(buf)
                    self.stats.reply_dropped_bytes += buf.dropped_bytes

    async def _play(self, buf: ReplyBuffer, tp: TurnPlayout) -> None:
        while not (buf.available == 0 and buf.finished):
            if buf.available < self._chunk_bytes and not buf.finished:
                # Wait for a full chunk, but never let Twilio run dry waiting for one.
                if not buf.available:
                    deadline = float("inf")
                elif tp.sent_ms == 0 and buf.first_audio_at is not None:
                    deadline = buf.first_audio_at + self._chunk_bytes / tw.BYTES_PER_MS / 1000
                else:
                    deadline = self.playout.play_end - UNDERRUN_GUARD_S
                with trio.move_on_at(deadline):
                    await buf.wait_changed()
                    continue
            await trio.sleep_until(self.playout.send_at(trio.current_time()))
            chunk = buf.take(self._chunk_bytes)
            async with self._lock:
                await self._send(tw.build_media(self.stream_sid, chunk))
                now = trio.current_time()
                name = self.playout.on_sent(tp, len(chunk) // tw.BYTES_PER_MS, now, ulaw_dbfs(chunk))
                if self.tap is not None:  # plays from play_end - its length: where the caller hears it
                    self.tap.played(self.playout.play_end - len(chunk) / tw.BYTES_PER_MS / 1000, chunk)
                await self._send(tw.build_mark(self.stream_sid, name))
            self.stats.messages_out += 2
            self.stats.audio_out_ms += len(chunk) // tw.BYTES_PER_MS
            if self.caller_end_at is not None:
                self.stats.reply_latency_ms.append((now - self.caller_end_at) * 1000)
                self.caller_end_at = None
        tp.finished_sending = True

    async def wait_played(self, limit_s: float = 10.0) -> None:
        """Let the goodbye finish playing (bounded) before the call ends."""
        with trio.move_on_after(limit_s):
            while not self.idle(trio.current_time()):
                await trio.sleep(0.05)

    # -- barge-in --------------------------------------------------------------

    async def barge_in(self, trigger: str, trigger_at: float) -> Cut | None:
        """Stop talking now: cancel the turn, drop queued replies, ``clear`` Twilio.

        Returns what was cut off (None when the agent was not speaking).
        """
        if not self.speaking(trio.current_time()):
            return None
        current = self._current
        tp = current[1] if current else self._last_turn
        for buf in self._queued:
            self._cancelled.add(buf.item_id)
        if self._filling is not None:
            self._cancelled.add(self._filling.item_id)
            self._filling = None
        if current is not None:
            current[2].cancel(reason=f"barge-in ({trigger})")
        heard = tp.heard_ms(trio.current_time()) if tp is not None else 0
        if tp is not None:
            tp.cancelled = True
        with trio.move_on_after(1.0, shield=True):
            async with self._lock:
                await self._send(tw.build_clear(self.stream_sid))
        self.stats.messages_out += 1
        cleared_at = trio.current_time()
        discarded = self.playout.clear(cleared_at)
        if self.tap is not None:
            self.tap.cleared(cleared_at)
        latency = (cleared_at - trigger_at) * 1000
        self.stats.barge_ins += 1
        self.stats.discarded_ms += discarded
        self.stats.clear_latency_ms.append(latency)
        return Cut(tp.item_id if tp else "", heard, tp.sent_ms if tp else 0, discarded, latency)
