"""A lean multi-call Twilio Media Streams driver: N concurrent callers in one process.

Run it as its own process (``python -m bench.driver --url ws://… --calls N``);
it prints one JSON summary on stdout.  Each caller behaves like Twilio:

* ``connected`` + ``start``, then one 20 ms inbound ``media`` frame every
  20 ms on **absolute** deadlines (``t0 + k × 20 ms``: no drift), starts
  staggered evenly over ``--ramp-s``, then ``stop``;
* it plays the bridge's outbound audio in real time and echoes each ``mark``
  when the audio sent before it has played (on the caller's next 20 ms tick),
  and echoes all pending marks at once on ``clear``.

Measured at the caller (see ``docs/benchmarks.md``):

* **outbound lateness**: a reply's chunk that arrives after the previous
  chunk of the same turn (turn = the middle field of our mark names) has
  finished playing makes the caller hear a gap; the gap is its lateness.
  The first chunk of a turn is not late by definition (that is reply latency);
* **frame latency** (``--script passthrough``): frames carry a sequence tag,
  the passthrough agent returns them, and each is timed from send to the
  outbound message that carries it back;
* **clear latency**: barge-in trigger sent → ``clear`` received;
* the server's CPU (``/proc/<pid>/stat``, the whole process tree) and RSS
  over the window when all calls are live, and the driver's own CPU and
  send lateness (if the driver is late, the run says so: it is invalid).

Scripts: ``echo`` (1.5 s tone, 2.5 s silence, repeated: the echo agent
answers in the silence), ``echo-barge`` (1.5 s tone, 1.2 s silence: the next
utterance talks over the reply → local-VAD barge-in), ``passthrough``
(tagged frames; ``--barge-every-s`` adds a ``BRG!`` frame that the
passthrough agent turns into a provider barge-in signal), ``agent`` (the
caller is silent; :mod:`bench.fake_agent` speaks on its own schedule with
every 20 ms of its audio tagged: time to first audio, later frames, gaps).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import resource
import struct
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import trio

from bench.wsraw import OP_TEXT, RawWebSocket, text
from twibridge.audio.g711 import pcm16_to_ulaw
from twibridge.twilio.emulation import (
    build_connected, build_inbound_media, build_mark_echo, build_start, build_stop,
)

FRAME_S = 0.020
FRAME_BYTES = 160
SILENCE = b"\xff" * FRAME_BYTES
SEQ_TAG, BARGE_TAG = b"SEQ!", b"BRG!"
#: ``bench.fake_agent``'s tag on every 20 ms of reply audio: reply no., frame no., monotonic send time.
AGENT_TAG = b"FA!!"
#: Echo script: talk this many frames, then stay quiet this many.
TALK_FRAMES, QUIET_FRAMES = 75, 125
BARGE_QUIET_FRAMES = 60
CONNECT_TIMEOUT_S = 10.0
CLOSE_WAIT_S = 2.0
#: A send that has not gone out after this long ends that call as ``send:stalled`` (its CallSid is listed):
#: the server stopped reading the socket (TCP backpressure).  Bounding it keeps one wedged call from
#: holding the whole run until its deadline.
SEND_STALL_S = 10.0
ACCOUNT_SID = "AC" + "0" * 32


def tone_frames(freq: float = 440.0, amp: float = 0.3, n_frames: int = 50) -> list[bytes]:
    n = n_frames * FRAME_BYTES
    pcm = struct.pack(f"<{n}h", *(int(amp * 32767 * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n)))
    ulaw = pcm16_to_ulaw(pcm)
    return [ulaw[i:i + FRAME_BYTES] for i in range(0, n, FRAME_BYTES)]


TONE = tone_frames()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def dist(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": pct(values, 0.5), "p95": pct(values, 0.95), "p99": pct(values, 0.99),
            "max": max(values) if values else None}


# --------------------------------------------------------------- /proc sampling


def _proc_tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    parents[int(name)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, todo = [root], [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        tree += kids
        todo += kids
    return tree


def _cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            continue
    return total


def _system_busy_ticks() -> int:
    """CPU ticks spent busy by the whole machine (all cores, steal included)."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    return sum(f) - f[3] - f[4]  # minus idle and iowait


def _self_ticks() -> int:
    return _cpu_ticks([os.getpid()])


def _rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


# ------------------------------------------------------------------ one caller


@dataclass
class Shared:
    """Samples from all callers of the run."""

    lateness_ms: list[float] = field(default_factory=list)
    reply_latency_ms: list[float] = field(default_factory=list)
    clear_latency_ms: list[float] = field(default_factory=list)
    frame_latency_ms: list[float] = field(default_factory=list)
    newest_latency_ms: list[float] = field(default_factory=list)
    send_late_ms: list[float] = field(default_factory=list)
    first_audio_ms: list[float] = field(default_factory=list)
    later_frame_ms: list[float] = field(default_factory=list)
    bridge_gap_ms: list[float] = field(default_factory=list)
    marks_in: int = 0
    frames_sent: int = 0
    connected: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    close_codes: Counter[int] = field(default_factory=Counter)
    silent_calls: int = 0
    clears: int = 0
    barges_sent: int = 0
    media_in: int = 0
    #: CallSids whose send stalled (see SEND_STALL_S): look them up in the server's log.
    stalled: list[str] = field(default_factory=list)


class Caller:
    def __init__(self, args: argparse.Namespace, index: int, shared: Shared) -> None:
        self.a, self.i, self.sh = args, index, shared
        self.call_sid = f"CA{args.prefix}{index:0{32 - len(args.prefix)}d}"
        self.stream_sid = f"MZ{args.prefix}{index:0{32 - len(args.prefix)}d}"
        self.seq = 1
        self.marks: deque[list[Any]] = deque()  # [due, name]
        self.play_end = 0.0
        self.last_turn: str | None = None
        #: (arrival, ms) of each media since the last mark: a mark names their turn
        #: (twibridge marks every ``chunk_ms`` of audio, not every message).
        self.pending: list[tuple[float, int]] = []
        #: ``--script agent``: the caller's playback of the tagged reply audio (monotonic clock).
        self.fa_reply = -1
        self.fa_play_end = 0.0
        self.sent_at: dict[int, float] = {}
        self.talk_end_at: float | None = None
        self.talk_start_at: float | None = None
        self.barge_at: float | None = None
        self.got_media = False
        self.talks_ended = 0

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def payload(self, k: int, now: float) -> bytes:
        script = self.a.script
        if script == "agent":
            return SILENCE
        if script == "passthrough":
            every = self.a.barge_every_frames
            if every and k % every == (self.i * 37) % every and k > 0:
                self.barge_at = now
                self.sh.barges_sent += 1
                return BARGE_TAG + k.to_bytes(4, "big") + SILENCE[8:]
            self.sent_at[k] = now
            return SEQ_TAG + k.to_bytes(4, "big") + SILENCE[8:]
        quiet = QUIET_FRAMES if script == "echo" else BARGE_QUIET_FRAMES
        pos = k % (TALK_FRAMES + quiet)
        if pos < TALK_FRAMES:
            if pos == 0:
                self.talk_start_at = now
            return TONE[k % len(TONE)]
        if pos == TALK_FRAMES:
            self.talk_end_at = now
            self.talks_ended += 1
        return SILENCE

    async def run(self, start_at: float) -> None:
        await trio.sleep_until(start_at)
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                ws = await RawWebSocket.connect(self.a.host, self.a.port, self.a.path)
        except Exception as exc:  # noqa: BLE001 - every failure is counted, by kind
            self.sh.failed[type(exc).__name__] += 1
            return
        self.sh.connected += 1
        try:
            async with trio.open_nursery() as nursery:
                done = trio.Event()
                nursery.start_soon(self._reader, ws, done)
                ok = await self._sender(ws)
                if ok:
                    with trio.move_on_after(CLOSE_WAIT_S):
                        await done.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.sh.close_codes[ws.closed_code or 0] += 1
            if not self.got_media and self.a.script != "none":
                self.sh.silent_calls += 1
            with trio.CancelScope(shield=True):
                try:
                    # Like Twilio: a close frame, then the TCP close (servers that never close
                    # after ``stop`` — e.g. Twilio's sample — learn of the hang-up this way).
                    await ws.aclose(1000)
                except Exception:  # noqa: BLE001
                    pass

    async def _sender(self, ws: RawWebSocket) -> bool:
        sid = self.stream_sid
        head = text(build_connected()) + text(build_start(1, sid, ACCOUNT_SID, self.call_sid,
                                                          {"From": "+15550001", "To": "+15550002"}))
        try:
            await self._send(ws, head)
            t0 = trio.current_time() + FRAME_S
            late = self.sh.send_late_ms
            for k in range(self.a.frames):
                deadline = t0 + k * FRAME_S
                await trio.sleep_until(deadline)
                now = trio.current_time()
                late.append((now - deadline) * 1000)
                out = text(build_inbound_media(self._next_seq(), sid, k + 1, k * 20, self.payload(k, now)))
                marks = self.marks
                while marks and marks[0][0] <= now:
                    out += text(build_mark_echo(self._next_seq(), sid, marks.popleft()[1]))
                await self._send(ws, out)
                self.sh.frames_sent += 1
            await self._send(ws, text(build_stop(self._next_seq(), sid, ACCOUNT_SID, self.call_sid)))
            return True
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError) as exc:
            self.sh.failed["send:" + type(exc).__name__] += 1
            return False
        except trio.TooSlowError:
            self.sh.failed["send:stalled"] += 1
            self.sh.stalled.append(self.call_sid)
            return False

    @staticmethod
    async def _send(ws: RawWebSocket, data: bytes) -> None:
        with trio.fail_after(SEND_STALL_S):
            await ws.send(data)

    async def _reader(self, ws: RawWebSocket, done: trio.Event) -> None:
        try:
            while True:
                msg = await ws.receive()
                if msg is None:
                    return
                op, data = msg
                if op == OP_TEXT:
                    self._on_message(json.loads(data), trio.current_time())
        finally:
            done.set()

    def _on_message(self, d: dict[str, Any], now: float) -> None:
        ev = d.get("event")
        if ev == "media":
            p = d["media"]["payload"]
            nbytes = len(p) * 3 // 4 - (p[-2:].count("=") if p else 0)
            self.pending.append((now, nbytes // 8))
            self.got_media = True
            self.sh.media_in += 1
            if self.a.script == "passthrough":
                self._frame_latency(base64.b64decode(p), now)
            elif self.a.script == "agent":
                self._first_audio(base64.b64decode(p), time.monotonic())
        elif ev == "mark":
            name = d["mark"]["name"]
            parts = name.split(":")
            # Our mark names carry the turn; other servers' (e.g. Twilio's sample: "responsePart")
            # do not: then a turn is the reply to the caller's latest utterance.
            turn = parts[1] if len(parts) == 3 else f"u{self.talks_ended}"
            self.sh.marks_in += 1
            due = now
            if self.pending:
                for arrival, ms in self.pending:
                    if turn != self.last_turn:
                        if self.talk_end_at is not None and self.a.script.startswith("echo"):
                            self.sh.reply_latency_ms.append((arrival - self.talk_end_at) * 1000)
                        self.play_end = arrival + ms / 1000
                    else:
                        self.sh.lateness_ms.append(max(0.0, arrival - self.play_end) * 1000)
                        self.play_end = max(self.play_end, arrival) + ms / 1000
                    self.last_turn = turn
                self.pending = []
                due = self.play_end
            self.marks.append([due, name])
        elif ev == "clear":
            self.sh.clears += 1
            trigger = self.barge_at if self.a.script == "passthrough" else self.talk_start_at
            if trigger is not None:
                self.sh.clear_latency_ms.append((now - trigger) * 1000)
                self.barge_at = None
            for m in self.marks:
                m[0] = now
            self.play_end = now
            self.last_turn = None
            self.pending = []

    def _first_audio(self, audio: bytes, now: float) -> None:
        """Tagged reply frames (``bench.fake_agent``): first-audio latency, later frames, gaps.

        ``now`` and the tags' send times are ``time.monotonic()``: one clock
        for every process on the machine.  A gap counts only the part the
        bridge caused: from when the audio was due (the previous audio ran
        out) or sent by the agent, whichever is later, to its arrival.
        """
        for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES):
            if audio[i:i + 4] != AGENT_TAG:
                continue
            reply, k, sent = struct.unpack_from("!HHd", audio, i + 4)
            if reply != self.fa_reply:
                self.fa_reply = reply
                if k == 0:
                    self.sh.first_audio_ms.append((now - sent) * 1000)
                self.fa_play_end = now
            else:
                self.sh.later_frame_ms.append((now - sent) * 1000)
                if now > self.fa_play_end:
                    self.sh.bridge_gap_ms.append(max(0.0, now - max(self.fa_play_end, sent)) * 1000)
            self.fa_play_end = max(self.fa_play_end, now) + FRAME_S

    def _frame_latency(self, audio: bytes, now: float) -> None:
        newest = None
        for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES):
            if audio[i:i + 4] == SEQ_TAG:
                k = int.from_bytes(audio[i + 4:i + 8], "big")
                sent = self.sent_at.pop(k, None)
                if sent is not None:
                    self.sh.frame_latency_ms.append((now - sent) * 1000)
                    newest = sent if newest is None else max(newest, sent)
        if newest is not None:
            self.sh.newest_latency_ms.append((now - newest) * 1000)


# ---------------------------------------------------------------------- the run


async def run(args: argparse.Namespace) -> dict[str, Any]:
    shared = Shared()
    pids = _proc_tree(args.pid) if args.pid else []
    rss_idle = _rss_kb(pids)
    start = trio.current_time() + 0.2
    step = args.ramp_s / max(1, args.calls)
    window: dict[str, Any] = {}
    duration = args.frames * FRAME_S

    async def sample() -> None:
        # The window in which every call is live: after the ramp (+1 s), before the first call ends.
        await trio.sleep_until(start + args.ramp_s + 1.0)
        ps = _proc_tree(args.pid) if args.pid else []
        t_a, c_a, r_a = time.monotonic(), _cpu_ticks(ps), resource.getrusage(resource.RUSAGE_SELF)
        sys_a, me_a = _system_busy_ticks(), _self_ticks()
        aux = _proc_tree(args.aux_pid) if args.aux_pid else []
        aux_a = _cpu_ticks(aux)
        await trio.sleep_until(start + max(args.ramp_s + 2.0, duration - 0.5))
        t_b, c_b, r_b = time.monotonic(), _cpu_ticks(ps), resource.getrusage(resource.RUSAGE_SELF)
        sys_b, me_b = _system_busy_ticks(), _self_ticks()
        aux_ticks = _cpu_ticks(aux) - aux_a if aux else 0
        wall = t_b - t_a
        hz = os.sysconf("SC_CLK_TCK")
        window.update(
            server_cpu_pct=100 * (c_b - c_a) / os.sysconf("SC_CLK_TCK") / wall if ps else None,
            server_rss_kb=_rss_kb(ps) if ps else None,
            server_processes=len(ps),
            aux_cpu_pct=100 * aux_ticks / hz / wall if aux else None,
            driver_cpu_pct=100 * ((r_b.ru_utime + r_b.ru_stime) - (r_a.ru_utime + r_a.ru_stime)) / wall,
            window_s=round(wall, 2),
            # Everything else on the machine (other engineers' tests, the fake agent…), % of one core.
            other_cpu_pct=100 * ((sys_b - sys_a) - (c_b - c_a) - (me_b - me_a) - aux_ticks) / hz / wall,
        )

    # Bounded, but a run that overruns still reports what it measured (``overran``): the soak keeps going.
    with trio.move_on_after(args.ramp_s + duration + 60) as overall:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            for i in range(args.calls):
                nursery.start_soon(Caller(args, i, shared).run, start + i * step)
    if overall.cancelled_caught:
        shared.failed["overran"] += 1  # so no "holds" rule and no soak verdict can pass this run
    return {
        "calls": args.calls, "overran": overall.cancelled_caught, "script": args.script, "prefix": args.prefix,
        "connected": shared.connected,
        "failed": dict(shared.failed), "stalled": shared.stalled,
        "silent_calls": shared.silent_calls, "frames_sent": shared.frames_sent,
        "media_in": shared.media_in, "close_codes": {str(k): v for k, v in shared.close_codes.items()},
        "lateness_ms": dist(shared.lateness_ms),
        "late_chunks_over_20ms": sum(1 for x in shared.lateness_ms if x > 20),
        "reply_latency_ms": dist(shared.reply_latency_ms),
        "clear_latency_ms": dist(shared.clear_latency_ms), "clears": shared.clears,
        "barges_sent": shared.barges_sent,
        "frame_latency_ms": dist(shared.frame_latency_ms), "newest_frame_latency_ms": dist(shared.newest_latency_ms),
        "driver_send_late_ms": dist(shared.send_late_ms),
        "first_audio_ms": dist(shared.first_audio_ms), "later_frame_ms": dist(shared.later_frame_ms),
        "bridge_gap_ms": dist(shared.bridge_gap_ms), "marks_in": shared.marks_in,
        "server_rss_idle_kb": rss_idle or None, **window,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.driver", description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="ws://host:port/media-stream")
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--duration-s", type=float, default=15.0, help="audio each caller sends")
    p.add_argument("--ramp-s", type=float, default=2.0, help="starts spread evenly over this")
    p.add_argument("--script", choices=["echo", "echo-barge", "passthrough", "agent"], default="echo")
    p.add_argument("--barge-every-s", type=float, default=0.0, help="passthrough: a BRG! frame this often")
    p.add_argument("--pid", type=int, default=0, help="server pid (its process tree is sampled)")
    p.add_argument("--aux-pid", type=int, default=0, help="a helper's pid (e.g. the fake agent): CPU reported apart")
    p.add_argument("--prefix", default="", help="CallSid prefix (hex) identifying this run")
    args = p.parse_args(argv)
    u = urlsplit(args.url)
    args.host, args.port, args.path = u.hostname or "127.0.0.1", u.port or 80, u.path or "/"
    args.frames = int(args.duration_s / FRAME_S)
    args.barge_every_frames = int(args.barge_every_s / FRAME_S)
    args.prefix = args.prefix or os.urandom(4).hex()
    result = trio.run(run, args)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
