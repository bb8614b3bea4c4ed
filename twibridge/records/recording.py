"""The call's recording: stereo 8 kHz WAV, the caller left, the agent as heard right.

Two parts:

* :class:`Mixer` (sans-IO) keeps both channels on one timeline of samples
  from the stream's ``start``.  The **caller** (left) is placed by each
  frame's stream time, after the jitter buffer: in order, gaps filled with
  silence.  The **agent** (right) is placed where the caller heard it: each
  chunk at its playout position (``call/playout.py``'s clock), and a
  ``clear`` at time *T* drops everything placed after *T* — what Twilio
  threw away is not in the recording.  Paused spans are silence in both.
* :class:`Recording` is the call's side: tiny non-blocking hooks put events
  on a bounded queue (a full queue drops, counted, never waits), and a
  writer task of its own places them and appends to the file every
  :data:`FLUSH_S`, audio older than :data:`HORIZON_MS` (late caller frames
  still land; a clear can only cut the future).  Python's :mod:`wave`
  rewrites the header on every append, so after a crash the file is a valid
  WAV up to the last second or two.  Any I/O error (disk full, a read-only
  mount): one warning, the recording stops, the call goes on.

Files: ``<dir>/<YYYY-MM-DD>/<CallSid>.wav`` (UTC date of the start), mode
0600 in directories 0700; :func:`sweep` deletes those older than ``keep_days``.
"""

from __future__ import annotations

import os
import time
import wave
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import trio

from twibridge.audio.g711 import ulaw_to_pcm16
from twibridge.config.records import RecordingConfig
from twibridge.logs import get_logger

log = get_logger("twibridge.records.recording")

RATE = 8000
PER_MS = RATE // 1000
SILENCE = 0xFF  # μ-law zero
#: The writer appends this often (the most a crash can lose, plus the horizon).
FLUSH_S = 1.0
#: Audio is written once it is this old: caller frames that come late still find their place.
HORIZON_MS = 500
#: Events queued between the media path and the writer (~8 s of a busy call).
QUEUE_EVENTS = 500


class Mixer:
    """Two μ-law channels on one timeline (sample 0 = ``start``); :meth:`take` hands out finished audio."""

    def __init__(self) -> None:
        self.base = 0  # samples before this are written
        self.left = bytearray()
        self.right = bytearray()
        self.pauses: list[list[int | None]] = []  # [from, to) in samples; to None while paused
        self.late_samples = 0

    def _place(self, buf: bytearray, pos: int, ulaw: bytes) -> None:
        start = pos - self.base
        if start < 0:  # before what is written already: too late
            self.late_samples += min(len(ulaw), -start)
            ulaw = ulaw[-start:]
            start = 0
        if not ulaw:
            return
        end = start + len(ulaw)
        if len(buf) < end:
            buf.extend(bytes([SILENCE]) * (end - len(buf)))
        buf[start:end] = ulaw

    def caller(self, t_ms: int, ulaw: bytes) -> None:
        self._place(self.left, t_ms * PER_MS, ulaw)

    def agent(self, at_ms: float, ulaw: bytes) -> None:
        self._place(self.right, round(at_ms * PER_MS), ulaw)

    def clear(self, at_ms: float) -> None:
        """Twilio dropped its queue at ``at_ms``: nothing of the agent after it was heard."""
        cut = max(0, round(at_ms * PER_MS) - self.base)
        del self.right[cut:]

    def pause(self, at_ms: int) -> None:
        if not self.pauses or self.pauses[-1][1] is not None:
            self.pauses.append([at_ms * PER_MS, None])

    def resume(self, at_ms: int) -> None:
        if self.pauses and self.pauses[-1][1] is None:
            self.pauses[-1][1] = at_ms * PER_MS

    def take(self, upto_ms: float | None = None) -> tuple[bytes, bytes]:
        """Both channels from ``base`` to ``upto_ms`` (everything placed when None), paused spans silenced."""
        end = max(len(self.left), len(self.right)) if upto_ms is None else max(0, round(upto_ms * PER_MS) - self.base)
        if end <= 0:
            return b"", b""
        out = []
        for buf in (self.left, self.right):
            part = bytearray(buf[:end])
            part.extend(bytes([SILENCE]) * (end - len(part)))
            del buf[:end]
            out.append(part)
        for frm, to in self.pauses:
            assert frm is not None
            lo, hi = max(frm - self.base, 0), min((end if to is None else to - self.base), end)
            if lo < hi:
                for part in out:
                    part[lo:hi] = bytes([SILENCE]) * (hi - lo)
        self.base += end
        self.pauses = [p for p in self.pauses if p[1] is None or p[1] > self.base]
        return bytes(out[0]), bytes(out[1])


def stereo_pcm16(left: bytes, right: bytes) -> bytes:
    """Two μ-law channels of equal length → interleaved 16-bit little-endian PCM (L, R)."""
    lch = np.frombuffer(ulaw_to_pcm16(left), dtype="<i2")
    rch = np.frombuffer(ulaw_to_pcm16(right), dtype="<i2")
    both = np.empty(len(lch) * 2, dtype="<i2")
    both[0::2], both[1::2] = lch, rch
    return both.tobytes()


def recording_path(root: str | Path, call_sid: str, epoch: float) -> Path:
    day = datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d")
    safe = "".join(c for c in call_sid if c.isalnum()) or "call"
    return Path(root) / day / f"{safe}.wav"


class Recording:
    """One call's recording; see the module docstring.  ``t0`` is the trio time of ``start``."""

    def __init__(self, cfg: RecordingConfig, call_sid: str, t0: float, epoch: float) -> None:
        self.path = recording_path(cfg.dir, call_sid, epoch)
        self.t0 = t0
        self.failed = False
        self.dropped = 0
        self.mixer = Mixer()
        #: Our clock minus the stream's (ms): the least-delayed caller frame's arrival minus its
        #: timestamp.  Agent audio, clears and pauses are placed on the stream's timeline with it.
        self.offset_ms: float | None = None
        self._send, self._recv = trio.open_memory_channel[tuple[Any, ...]](QUEUE_EVENTS)
        self._wav: wave.Wave_write | None = None
        self._file: BinaryIO | None = None

    # -- hooks: the media path; never wait, never raise ---------------------

    def _put(self, ev: tuple[Any, ...]) -> None:
        if self.failed:
            return
        try:
            self._send.send_nowait(ev)
        except trio.WouldBlock:
            self.dropped += 1
        except trio.ClosedResourceError:
            pass

    def caller(self, t_ms: int, ulaw: bytes) -> None:
        """A caller frame after the jitter buffer, at stream time ``t_ms``."""
        self._put(("c", t_ms, ulaw, trio.current_time()))

    def played(self, at: float, ulaw: bytes) -> None:
        """Agent audio that will play from trio time ``at`` (the speaker's tap)."""
        self._put(("a", (at - self.t0) * 1000, ulaw))

    def cleared(self, at: float) -> None:
        """Twilio was told to ``clear`` at trio time ``at`` (the speaker's tap)."""
        self._put(("x", (at - self.t0) * 1000))

    def pause(self, t_ms: int) -> None:
        self._put(("p", t_ms))

    def resume(self, t_ms: int) -> None:
        self._put(("r", t_ms))

    # -- the writer task --------------------------------------------------

    async def run(self) -> None:
        """Place events as they come, append every second; on cancel, write the rest (bounded)."""
        try:
            await self._io(self._open)
            next_flush = trio.current_time() + FLUSH_S
            while not self.failed:
                with trio.move_on_at(next_flush):
                    async for ev in self._recv:
                        self._apply(ev)
                now = trio.current_time()
                next_flush = now + FLUSH_S
                await self._io(self._write, *self.mixer.take(self._stream_ms((now - self.t0) * 1000) - HORIZON_MS))
        finally:
            with trio.move_on_after(2.0, shield=True):
                await self._finish()

    async def _finish(self) -> None:
        self._send.close()
        while not self.failed:
            try:
                self._apply(self._recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        if not self.failed and self._wav is not None:
            # The call is over: nothing more is heard.
            self.mixer.clear(self._stream_ms((trio.current_time() - self.t0) * 1000))
            await self._io(self._write, *self.mixer.take())
        await self._io(self._close)
        if self._file is not None:  # the bound above cut it short: release the file regardless
            try:
                self._close()
            except (OSError, wave.Error):
                pass
        if self.dropped:
            log.warning("recording.events_dropped", dropped=self.dropped, message="the writer fell behind")

    def _stream_ms(self, ours_ms: float) -> float:
        return ours_ms - (self.offset_ms or 0.0)

    def _apply(self, ev: tuple[Any, ...]) -> None:
        kind = ev[0]
        if kind == "c":
            lag = (ev[3] - self.t0) * 1000 - ev[1]
            self.offset_ms = lag if self.offset_ms is None else min(self.offset_ms, lag)
            self.mixer.caller(ev[1], ev[2])
        elif kind == "a":
            self.mixer.agent(self._stream_ms(ev[1]), ev[2])
        elif kind == "x":
            self.mixer.clear(self._stream_ms(ev[1]))
        elif kind == "p":
            self.mixer.pause(round(self._stream_ms(ev[1])))
        elif kind == "r":
            self.mixer.resume(round(self._stream_ms(ev[1])))

    async def _io(self, fn: Any, *args: Any) -> None:
        if self.failed and fn != self._close:  # (bound methods: equal, never identical)
            return
        try:
            await trio.to_thread.run_sync(fn, *args)
        except (OSError, wave.Error, EOFError) as exc:
            if not self.failed:
                self.failed = True
                log.warning("recording.stopped", file=str(self.path), error=getattr(exc, "strerror", None)
                            or type(exc).__name__, message="the call goes on without a recording")

    # -- in a worker thread -----------------------------------------------

    def _open(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file = os.fdopen(fd, "wb")  # held at once: _close releases it whatever fails next
        wav = self._wav = wave.open(self._file, "wb")
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(b"")  # the header, now
        self._file.flush()

    def _write(self, left: bytes, right: bytes) -> None:
        if self._wav is None or self._file is None or not left:
            return
        self._wav.writeframes(stereo_pcm16(left, right))  # appends, then rewrites the header's sizes
        self._file.flush()

    def _close(self) -> None:
        wav, f, self._wav, self._file = self._wav, self._file, None, None
        try:
            if wav is not None:
                wav.close()
        finally:
            if f is not None:
                f.close()


def sweep(root: str | Path, keep_days: int, now: float | None = None) -> int:
    """Delete recordings (and their day folders) older than ``keep_days``; how many files went."""
    if keep_days <= 0:
        return 0
    now = time.time() if now is None else now
    gone = 0
    root = Path(root)
    try:
        days = [d for d in root.iterdir() if d.is_dir()]
    except OSError:
        return 0
    for day in days:
        for f in list(day.iterdir()):
            try:
                if now - f.stat().st_mtime > keep_days * 86400:
                    f.unlink()
                    gone += 1
            except OSError:
                continue
        try:
            day.rmdir()  # only when empty
        except OSError:
            pass
    return gone


async def sweeper(cfg: RecordingConfig, period_s: float = 3600.0) -> None:
    """The server's periodic sweep of old recordings (at start, then every ``period_s``)."""
    while True:
        gone = await trio.to_thread.run_sync(sweep, cfg.dir, cfg.keep_days)
        if gone:
            log.info("recording.swept", deleted=gone, keep_days=cfg.keep_days)
        await trio.sleep(period_s)
