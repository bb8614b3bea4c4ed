"""The agent's voice on one call: queued replies, paced out, cut off on barge-in.

One turn at a time, by structure: :meth:`Speaker.run` takes the next reply
only after the previous one's cancel scope has ended (the seed's
``isProcessing`` lock, without a lock).  Each reply is sent by one task in
its own cancel scope; :meth:`Speaker.barge_in` cancels that scope *with a
reason* — nothing of the turn is sent after it, since every send holds the
socket's lock and the ``clear`` queues behind it — then sends ``clear``
(shielded, bounded) and resets the playout clock.

Pacing is :class:`~twibridge.call.playout.Playout`'s: absolute deadlines on one
clock per call, at most ``outbound_lead_ms`` queued at Twilio.  How audio is
cut into messages adds no latency (issue #16):

* **Nothing waits for a full message.**  While Twilio has less than
  :data:`LOW_WATER_S` left to play (a reply's start, a real-time agent),
  whatever has arrived goes out at once.  ``chunk_ms`` is the *largest*
  message, not a wait.
* **Coalescing only where it is free.**  While Twilio still has more than
  that queued, short pieces are joined (up to ``chunk_ms``) until a message
  is full or the queue falls to the low-water mark: the caller hears them at
  the same moment either way, and the per-message cost (what limits calls
  per process) falls.
* **Marks every ``chunk_ms`` of audio**, not after every message, and after
  a reply's last audio: what was heard is known to within one chunk.
* **Every send is whole** (:meth:`Speaker._send_one`): the WebSocket layer
  encodes a message (deflate state included) before it waits for the socket,
  so a cancel in between would lose a message the peer's state already
  counts.  Sends are shielded and bounded; a barge-in takes effect between
  messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import trio

from twibridge.agents.base import AudioOut, ReplyDone
from twibridge.audio.g711 import ulaw_dbfs
from twibridge import locks
from twibridge.config import TurnsConfig
from twibridge.logs import get_logger
from twibridge.call.limits import BoundedSet, WarnLimiter
from twibridge.call.playout import Playout, TurnPlayout
from twibridge.call.replies import LoopedReply, ReplyBuffer
from twibridge.twilio import protocol as tw

log = get_logger("twibridge.speaker")

#: Replies queued behind the one playing (bounded; more is a runaway agent).
MAX_QUEUED_REPLIES = 8
#: Below this much audio queued at Twilio, what has arrived goes out at once;
#: above it, short pieces wait to be joined.  It covers the writer's wake-up
#: delay under load, so joining never lets Twilio's queue run dry.
LOW_WATER_S = 0.04
#: Longest a single message may take to reach the socket (a peer that stopped
#: reading); beyond it the message is half-written at best and the call ends.
SEND_TIMEOUT_S = 2.0
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
    #: Agent audio held back while the caller was on hold (a warm transfer ringing).
    held_back_ms: int = 0
    #: When the call's first audio went out on the socket (pickup → audio).
    first_audio_at: float | None = None
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
        self._chunk_ms = cfg.chunk_ms
        self._chunk_bytes = cfg.chunk_ms * tw.BYTES_PER_MS
        self._turn_send, self._turn_recv = trio.open_memory_channel[ReplyBuffer](MAX_QUEUED_REPLIES)
        self._filling: ReplyBuffer | None = None
        self._queued: list[ReplyBuffer] = []
        self._cancelled = BoundedSet()  # bounded: the agent names the ids
        #: The call's limiter (set by the call): a flood of dropped replies logs a few, counts the rest.
        self.warnings = WarnLimiter()
        self._current: tuple[ReplyBuffer, TurnPlayout, trio.CancelScope] | None = None
        self._last_turn: TurnPlayout | None = None
        self._turn_no = 0
        #: Wall time the caller stopped talking, for reply latency (set by the call).
        self.caller_end_at: float | None = None
        self._filler: LoopedReply | None = None
        self.tap: Any = None  # the recording: .played(at, ulaw) per chunk sent, .cleared(at) per clear
        #: On hold (:meth:`hold`): the hold sound plays, the agent's audio is held back.
        self.held = False

    # -- fed by the agent ----------------------------------------------------

    def on_audio(self, ev: AudioOut) -> None:
        """Queue reply audio; never waits (the writer drains at real time)."""
        if ev.item_id in self._cancelled:
            return  # late audio of a reply the caller already cut off
        if self.held:  # the whole reply: none of it plays after the hold either
            self.stats.held_back_ms += len(ev.ulaw) // tw.BYTES_PER_MS
            self._cancelled.add(ev.item_id)
            return
        buf = self._filling
        if buf is None or buf.item_id != ev.item_id:
            if buf is not None:
                buf.finish()
            self._preempt_filler()  # the agent talks again: the thinking sound gives way
            buf = self._filling = ReplyBuffer(ev.item_id)
            try:
                self._turn_send.send_nowait(buf)
            except trio.WouldBlock:
                if self.warnings.allow("reply_dropped"):
                    log.warning("speaker.reply_dropped", item_id=ev.item_id, reason="too many queued replies")
                self._cancelled.add(ev.item_id)
                self._filling = None
                return
            self._queued.append(buf)
        buf.append(ev.ulaw)

    def play_clip(self, item_id: str, ulaw: bytes) -> bool:
        """Queue audio the bridge plays itself (a greeting sound, DTMF tones, a tone).

        It is a reply of its own, behind what is queued, and never touches the
        agent's reply being filled; a barge-in cuts it like any reply.  False
        when the queue is full.
        """
        buf = ReplyBuffer(item_id)
        buf.append(ulaw)
        buf.finish()
        try:
            self._turn_send.send_nowait(buf)
        except trio.WouldBlock:
            return False
        self._queued.append(buf)
        return True

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
            # A filler's turn names no item: the agent never hears of it (no mark, no interrupt).
            item_id = "" if isinstance(buf, LoopedReply) else buf.item_id
            tp = self._last_turn = self.playout.new_turn(self._turn_no, item_id)
            with trio.CancelScope() as scope:
                self._current = (buf, tp, scope)
                try:
                    await self._play(buf, tp)
                finally:
                    self._current = None
                    self._queued.remove(buf)
                    self.stats.reply_dropped_bytes += buf.dropped_bytes

    async def _play(self, buf: ReplyBuffer, tp: TurnPlayout) -> None:
        chunk = self._chunk_bytes
        playout = self.playout
        low_water = min(LOW_WATER_S, playout.lead_s)
        while True:
            available = buf.available
            if not available:
                if buf.finished:
                    break
                await buf.wait_changed()
                continue
            if available < chunk and not buf.finished:
                # A short piece: join more while Twilio has enough to play
                # (free: the caller hears it no later), else send it now.
                hold_until = playout.play_end - low_water
                if trio.current_time() < hold_until:
                    with trio.move_on_at(hold_until):
                        await buf.wait_changed()
                        continue
            due = playout.send_at(trio.current_time())
            if due > trio.current_time():  # a due send does not queue behind the scheduler first
                await trio.sleep_until(due)
            await self._send_audio(tp, buf.take(chunk))
        if tp.marked_ms < tp.sent_ms:  # the reply's last audio: its end is known when played
            await self._send_mark(tp)
        tp.finished_sending = True

    async def _send_audio(self, tp: TurnPlayout, audio: bytes) -> None:
        """One media message; marks at most ``chunk_ms`` of the turn's audio apart.

        A mark goes *before* a message that would leave more than a chunk
        unmarked (covering what was sent before it), and after one that
        completes a chunk: 20 ms pieces get one mark per five messages,
        full chunks one each, as before.
        """
        ms = len(audio) // tw.BYTES_PER_MS
        if tp.marked_ms < tp.sent_ms and tp.sent_ms + ms - tp.marked_ms > self._chunk_ms:
            await self._send_mark(tp)
        await self._send_one(tw.build_media(self.stream_sid, audio))
        now = trio.current_time()
        self.playout.on_sent(tp, ms, now, ulaw_dbfs(audio))
        if self.tap is not None:  # plays from play_end - its length: where the caller hears it
            self.tap.played(self.playout.play_end - ms / 1000, audio)
        self.stats.audio_out_ms += ms
        if self.stats.first_audio_at is None:
            self.stats.first_audio_at = now
        if self.caller_end_at is not None and tp.item_id:  # a filler (thinking sound) is no reply
            self.stats.reply_latency_ms.append((now - self.caller_end_at) * 1000)
            self.caller_end_at = None
        if tp.sent_ms - tp.marked_ms >= self._chunk_ms:
            await self._send_mark(tp)

    async def _send_mark(self, tp: TurnPlayout) -> None:
        name = self.playout.mark_name(tp)
        await self._send_one(tw.build_mark(self.stream_sid, name))
        tp.marked_ms = tp.sent_ms

    async def _send_one(self, message: str) -> None:
        """Send one message whole: a cancel waits until it is written (bounded).

        The WebSocket layer encodes a message before it waits for the socket;
        a cancel in that wait would drop a frame whose encoding already moved
        the connection's state on (with ``permessage-deflate``, the peer's
        inflater is then out of step and every later message is garbage).
        The lock is taken outside the shield, so a cancel still lands
        *between* messages.

        Raises:
            RemoteProtocolError: the socket took no data for ``SEND_TIMEOUT_S``.
        """
        lock = self._lock
        await locks.acquire(lock)  # free: no trip through the scheduler; else behind a barge-in's clear
        try:
            with trio.move_on_after(SEND_TIMEOUT_S, shield=True) as scope:
                await self._send(message)
        finally:
            lock.release()
        if scope.cancelled_caught:
            raise tw.RemoteProtocolError(f"Twilio socket took no data for {SEND_TIMEOUT_S:g} s")
        self.stats.messages_out += 1

    async def wait_played(self, limit_s: float = 10.0) -> None:
        """Let the goodbye finish playing (bounded) before the call ends."""
        self._preempt_filler()  # the call is ending or moving: no more thinking sound
        with trio.move_on_after(limit_s):
            while not self.idle(trio.current_time()):
                await trio.sleep(0.05)

    # -- barge-in --------------------------------------------------------------

    async def barge_in(self, trigger: str, trigger_at: float) -> Cut | None:
        """Stop talking now: cancel the turn, drop queued replies, ``clear`` Twilio.

        Returns what was cut off (None when the agent was not speaking, or the
        caller is on hold: talking over hold music does not stop it).
        """
        if self.held or not self.speaking(trio.current_time()):
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
        self._filler = None
        with trio.move_on_after(1.0, shield=True):
            await self._send_one(tw.build_clear(self.stream_sid))
        cleared_at = trio.current_time()
        discarded = self.playout.clear(cleared_at)
        if self.tap is not None:
            self.tap.cleared(cleared_at)
        latency = (cleared_at - trigger_at) * 1000
        self.stats.barge_ins += 1
        self.stats.discarded_ms += discarded
        self.stats.clear_latency_ms.append(latency)
        # A cut thinking sound has item_id "": the agent is not told of it.
        return Cut(tp.item_id if tp else "", heard, tp.sent_ms if tp else 0, discarded, latency)

    # -- bridge-made streams (the thinking sound, issue #17; hold, issue #21) ---

    def hold(self, item_id: str, loop: bytes) -> None:
        """Put the caller on hold: ``loop`` plays until :meth:`unhold`; meanwhile the
        agent's audio is held back and a barge-in does not cut the loop."""
        self.held = True
        self._preempt_filler()  # a thinking sound gives way
        self.start_filler(item_id, loop)

    async def unhold(self) -> None:
        """Off hold: the loop stops at once (``clear``), the agent may speak again."""
        self.held = False
        await self.stop_filler()

    def start_filler(self, item_id: str, loop: bytes) -> None:
        """Queue ``loop``, repeated, like a reply (behind one playing); it plays until
        :meth:`stop_filler`, a barge-in, or the agent's next reply."""
        buf = LoopedReply(item_id, loop)
        try:
            self._turn_send.send_nowait(buf)
        except trio.WouldBlock:
            return
        self._queued.append(buf)
        self._filler = buf

    def _preempt_filler(self) -> None:
        """Stop the filler without ``clear`` (what Twilio holds plays out, then the reply)."""
        buf, self._filler = self._filler, None
        if buf is not None:
            self._cancelled.add(buf.item_id)
            if self._current is not None and self._current[0] is buf:
                self._current[1].cancelled = True
                self._current[2].cancel(reason="agent reply after the thinking sound")

    async def stop_filler(self) -> None:
        """Stop the filler now: cancelled, and if it was playing, ``clear`` (shielded, bounded)."""
        buf, playing = self._filler, self._current is not None and self._current[0] is self._filler
        self._preempt_filler()
        if buf is not None and playing:
            with trio.move_on_after(1.0, shield=True):
                async with self._lock:  # fair: the next reply's first chunk queues behind this clear
                    await self._send(tw.build_clear(self.stream_sid))
                    self.playout.clear(trio.current_time())
            self.stats.messages_out += 1
