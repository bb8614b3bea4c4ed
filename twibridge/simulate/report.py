"""The call report: ``report.json`` (a public contract), the terminal tables, the progress bar.

Caller speech comes from the *input* audio, with a deliberately simple
energy VAD over 20 ms frames (the constants below, in one place): the
simulator must not depend on the bridge's VAD to judge the bridge.

* A **turn** is one caller speech segment and the first *heard*, audible
  reply audio after it ends (before the caller's next segment starts);
  latency = reply start − caller end of speech.
* A **barge-in** is a caller speech onset while reply audio was playing,
  paired with the next ``clear`` the bridge sent; latency = clear − onset.

Times are integer milliseconds on the call's audio timeline (0 = stream
start), the same timeline as ``--out reply.wav``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from twibridge.audio.g711 import ulaw_dbfs

if TYPE_CHECKING:
    from rich.console import Console

    from twibridge.simulate.record import CallResult

#: Caller VAD: a 20 ms frame louder than this is speech...
SPEECH_DBFS = -35.0
#: ...a segment needs at least this much speech...
MIN_SPEECH_MS = 300
#: ...and ends after this much below the threshold.
END_SILENCE_MS = 500
#: Heard audio quieter than this is not "reply audio" (a bridge may stream silence).
REPLY_AUDIBLE_DBFS = -50.0
#: Agent audio pieces closer than this are one reply in the timeline table.
REPLY_MERGE_GAP_MS = 300
FRAME_MS = 20
FRAME_BYTES = 160

REPORT_KEYS = (
    "call_sid", "stream_sid", "audio_sent_ms", "audio_received_ms", "frames_sent", "frames_received",
    "marks_received", "marks_echoed", "clears", "turns", "barge_ins", "events", "protocol_errors", "tools",
    "pickup_to_audio_ms", "agent_providers",
)


@dataclass(frozen=True, slots=True)
class Segment:
    start_ms: int
    end_ms: int


def _frames(ulaw: bytes) -> Iterator[bytes]:
    for i in range(0, len(ulaw) - FRAME_BYTES + 1, FRAME_BYTES):
        yield ulaw[i : i + FRAME_BYTES]


def speech_segments(ulaw: bytes) -> list[Segment]:
    """Caller speech segments in 8 kHz μ-law audio (energy VAD, see the constants)."""
    min_frames, hangover = MIN_SPEECH_MS // FRAME_MS, END_SILENCE_MS // FRAME_MS
    segments: list[Segment] = []
    start = last = -1
    count = 0

    def close() -> None:
        if count >= min_frames:
            segments.append(Segment(start * FRAME_MS, (last + 1) * FRAME_MS))

    n = -1
    for n, frame in enumerate(_frames(ulaw)):
        if ulaw_dbfs(frame) > SPEECH_DBFS:
            if start < 0:
                start, count = n, 0
            last = n
            count += 1
        elif start >= 0 and n - last >= hangover:
            close()
            start = -1
    if start >= 0:
        close()
    return segments


def replies(played: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Agent replies: played stretches, merged across gaps < REPLY_MERGE_GAP_MS
    (a bridge's pacing jitter must not split one reply in two)."""
    merged: list[list[float]] = []
    for s, e in played:
        if merged and s - merged[-1][1] < REPLY_MERGE_GAP_MS:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def _audible_start(heard: bytes, start: float, end: float) -> int | None:
    """First audible 20 ms of ``[start, end)`` on the heard timeline."""
    for f in range(int(start // FRAME_MS), int(end // FRAME_MS) + 1):
        frame = heard[f * FRAME_BYTES : (f + 1) * FRAME_BYTES]
        if len(frame) == FRAME_BYTES and ulaw_dbfs(frame) > REPLY_AUDIBLE_DBFS:
            return int(max(f * FRAME_MS, start))  # floor: where the audio was placed (playback._sample)
    return None


def build_report(result: CallResult, tools: list[dict[str, Any]] | None = None,
                 agent_providers: list[str] | None = None) -> dict[str, Any]:
    """The ``report.json`` dict: exactly :data:`REPORT_KEYS`, JSON-ready.

    ``tools``: the bridge's own record of the call's tool calls
    (``[{name, t_ms, duration_ms, outcome}]``, from its call summary);
    ``agent_providers``: every provider that served the call, from the same
    summary.  Both None when it cannot say (``--server``: a remote bridge).
    """
    sent = result.caller_ulaw[: result.frames_sent * FRAME_BYTES]
    segments = speech_segments(sent)
    played = result.played_intervals
    # (reply start, first audible ms) for each reply that has audible audio
    onsets = [(s, a) for s, e in replies(played) if (a := _audible_start(result.heard_ulaw, s, e)) is not None]
    turns: list[dict[str, int | None]] = []
    barge_ins: list[dict[str, int | None]] = []
    for i, seg in enumerate(segments):
        nxt = segments[i + 1].start_ms if i + 1 < len(segments) else result.call_ms
        # A reply already playing when the caller stops is not an answer to them.
        reply = next((a for s, a in onsets if s >= seg.end_ms and a < nxt), None)
        turns.append({"caller_start_ms": seg.start_ms, "caller_end_ms": seg.end_ms, "reply_start_ms": reply,
                      "reply_latency_ms": None if reply is None else reply - seg.end_ms})
        if any(s <= seg.start_ms < e for s, e in played):
            clear = next((round(t) for t in result.clears if seg.start_ms <= t < nxt), None)
            barge_ins.append({"caller_start_ms": seg.start_ms, "clear_ms": clear,
                              "latency_ms": None if clear is None else clear - seg.start_ms})
    events = list(result.events)
    events.append({"t_ms": round(result.call_ms, 1), "dir": "to_server", "event": "end",
                   "outcome": result.outcome.value, "detail": result.detail})
    return {
        "call_sid": result.call_sid,
        "stream_sid": result.stream_sid,
        "audio_sent_ms": result.frames_sent * FRAME_MS,
        "audio_received_ms": round(sum(e - s for s, e in played)),
        "frames_sent": result.frames_sent,
        "frames_received": result.frames_received,
        "marks_received": result.marks_received,
        "marks_echoed": result.marks_echoed,
        "clears": len(result.clears),
        "turns": turns,
        "barge_ins": barge_ins,
        "events": events,
        "protocol_errors": list(result.protocol_errors),
        "tools": None if tools is None else [dict(t) for t in tools],
        # start → the first audio the caller heard (a greeting sound, or the agent's first words)
        "pickup_to_audio_ms": round(played[0][0]) if played else None,
        "agent_providers": agent_providers,
    }


# --------------------------------------------------------------------------
# Terminal output
# --------------------------------------------------------------------------


def _sec(ms: float | None) -> str:
    return "—" if ms is None else f"{ms / 1000:.2f}"


def render_report(console: Console, report: dict[str, Any], result: CallResult) -> None:
    """Print the timeline table and the latency summary."""
    from rich.table import Table

    rows: list[tuple[float, str, str]] = []
    for t in report["turns"]:
        rows.append((t["caller_start_ms"], "caller", f"speech until {_sec(t['caller_end_ms'])} s"))
    for s, e in replies(result.played_intervals):
        marks = sum(1 for ev in report["events"]
                    if ev["event"] == "mark" and ev["dir"] == "to_server" and s <= ev["t_ms"] <= e + FRAME_MS)
        rows.append((s, "agent", f"audio until {_sec(e)} s ({(e - s) / 1000:.2f} s heard, {marks} marks echoed)"))
    for ev in report["events"]:
        name = ev["event"]
        if name == "clear":
            rows.append((ev["t_ms"], "agent", f"clear (dropped {ev.get('dropped_ms', 0)} ms unplayed)"))
        elif name == "dtmf":
            rows.append((ev["t_ms"], "caller", f"DTMF {ev['digit']}"))
        elif name in ("start", "stop", "close", "say", "dial", "hangup", "timeout"):
            extra = {"close": f" {ev.get('code', '')} {ev.get('reason', '')}".rstrip(),
                     "say": f" {ev.get('text', '')!r}", "dial": f" {ev.get('text', '')}"}.get(name, "")
            who = "twilio" if ev["dir"] == "to_server" else "server"
            rows.append((ev["t_ms"], who, f"{name}{extra}"))
        elif name == "error":
            rows.append((ev["t_ms"], "server", f"[red]protocol error[/red] {ev['error']}"))
    timeline = Table(title=f"Call {report['call_sid']}", title_justify="left")
    timeline.add_column("t (s)", justify="right")
    timeline.add_column("who")
    timeline.add_column("what")
    for t, who, what in sorted(rows, key=lambda r: r[0]):
        timeline.add_row(_sec(t), who, what)
    console.print(timeline)

    lat = Table(title="Latency", title_justify="left")
    lat.add_column("kind")
    lat.add_column("caller (s)", justify="right")
    lat.add_column("reply / clear (s)", justify="right")
    lat.add_column("latency (ms)", justify="right")
    for n, t in enumerate(report["turns"], 1):
        lat.add_row(f"turn {n}", f"{_sec(t['caller_start_ms'])}–{_sec(t['caller_end_ms'])}",
                    _sec(t["reply_start_ms"]),
                    "no reply" if t["reply_latency_ms"] is None else str(t["reply_latency_ms"]))
    for n, b in enumerate(report["barge_ins"], 1):
        lat.add_row(f"barge-in {n}", _sec(b["caller_start_ms"]), _sec(b["clear_ms"]),
                    "no clear" if b["latency_ms"] is None else str(b["latency_ms"]))
    if report["turns"] or report["barge_ins"]:
        console.print(lat)
    console.print(
        f"audio sent {report['audio_sent_ms'] / 1000:.2f} s ({report['frames_sent']} frames), "
        f"heard {report['audio_received_ms'] / 1000:.2f} s ({report['frames_received']} media messages), "
        f"marks {report['marks_received']} received / {report['marks_echoed']} echoed, "
        f"clears {report['clears']}"
    )
    for err in report["protocol_errors"]:
        console.print(f"[red]protocol error:[/red] {err}", markup=True, highlight=False)
    style = "green" if result.ok else "red"
    console.print(f"[{style}]{result.outcome.value}[/{style}]: {result.detail}")


class CallProgress:
    """A rich progress bar fed by :func:`simulate_call`'s ``on_progress``.

    Disabled (a no-op) when quiet or when the console is not a terminal, so
    logs and CI output stay clean.
    """

    def __init__(self, console: Console, total_ms: float, *, enabled: bool = True) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("calling"), BarColumn(), TextColumn("{task.completed:.1f}/{task.total:.1f} s"),
            TimeRemainingColumn(), console=console, transient=True,
            disable=not (enabled and console.is_terminal),
        )
        self._task = self._progress.add_task("call", total=total_ms / 1000)

    def __enter__(self) -> Callable[[float, float], None]:
        self._progress.start()
        return self.update

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, sent_ms: float, total_ms: float) -> None:
        self._progress.update(self._task, completed=sent_ms / 1000, total=total_ms / 1000)
