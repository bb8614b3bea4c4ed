"""A picture of one call as a single self-contained HTML page, sans-IO.

Both channels' waveforms on one time axis (the caller above, the agent as
heard below), the caller's turns and the agent's replies as bands, marks as
ticks, clears and barge-ins as red lines, tool calls and recording pauses,
the transcript at its times, and the numbers (latencies, outcome) on top.
Inline SVG and CSS only: no script, no font, no network; every text from
the call is HTML-escaped (it is the caller's speech and the agent's).

:func:`render` takes plain values; ``twibridge calls show --html`` feeds it a
report, its timeline and the recording, ``simulate-call --html`` the
simulator's view of the same things (:func:`twibridge.simulate.picture`).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from twibridge.audio.g711 import ulaw_to_pcm16

WIDTH = 1200
LANE_H = 70
BUCKETS = 1200
COLORS = {"caller": "#1f77b4", "agent": "#2ca02c", "turn": "#1f77b433", "reply": "#2ca02c33",
          "clear": "#d62728", "barge_in": "#d62728", "mark": "#7f7f7f", "tool": "#9467bd", "pause": "#00000022"}


@dataclass
class Picture:
    """What the page shows; times in ms on the call's timeline."""

    title: str
    duration_ms: float
    facts: list[tuple[str, str]] = field(default_factory=list)
    caller: np.ndarray | None = None  # PCM samples at 8 kHz (float or int)
    agent: np.ndarray | None = None
    #: (from_ms, to_ms, kind, label): kind in turn, reply, pause.
    spans: list[tuple[float, float, str, str]] = field(default_factory=list)
    #: (t_ms, kind, label): kind in mark, clear, barge_in, tool, reply.
    points: list[tuple[float, str, str]] = field(default_factory=list)
    transcript: list[Mapping[str, Any]] = field(default_factory=list)


def pcm_from_ulaw(ulaw: bytes) -> np.ndarray:
    return np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)


def envelope(samples: np.ndarray, buckets: int, total: int) -> np.ndarray:
    """Peak |amplitude| (0..1) in ``buckets`` equal slices of ``total`` samples."""
    out = np.zeros(buckets)
    if samples is None or not len(samples) or total <= 0:
        return out
    edges = np.linspace(0, total, buckets + 1).astype(int)
    a = np.abs(samples.astype(np.float64)) / 32768.0
    for i in range(buckets):
        lo, hi = edges[i], min(edges[i + 1], len(a))
        if lo < hi:
            out[i] = a[lo:hi].max()
    return out


def _x(t_ms: float, duration_ms: float) -> float:
    return round(max(0.0, min(1.0, t_ms / duration_ms if duration_ms else 0.0)) * WIDTH, 1)


def _wave(env: np.ndarray, y0: float, color: str) -> str:
    mid, half = y0 + LANE_H / 2, LANE_H / 2 - 4
    top = " ".join(f"{i * WIDTH / len(env):.1f},{mid - v * half:.1f}" for i, v in enumerate(env))
    bottom = " ".join(f"{i * WIDTH / len(env):.1f},{mid + v * half:.1f}" for i, v in reversed(list(enumerate(env))))
    return f'<polygon points="{top} {bottom}" fill="{color}" stroke="none"/>'


def _axis(duration_ms: float, y: float) -> str:
    step = next(s for s in (1000, 2000, 5000, 10_000, 30_000, 60_000, 300_000, 600_000, 3_600_000)
                if duration_ms / s <= 15)
    parts = [f'<line x1="0" y1="{y}" x2="{WIDTH}" y2="{y}" stroke="#999"/>']
    t = 0
    while t <= duration_ms:
        x = _x(t, duration_ms)
        parts.append(f'<line x1="{x}" y1="{y}" x2="{x}" y2="{y + 5}" stroke="#999"/>'
                     f'<text x="{x + 2}" y="{y + 16}" class="t">{_clock(t)}</text>')
        t += step
    return "".join(parts)


def _clock(ms: float) -> str:
    s = ms / 1000
    return f"{int(s // 60)}:{s % 60:04.1f}"


def render(p: Picture) -> str:
    """The whole page."""
    d = max(p.duration_ms, 1.0)
    lanes = [("caller", p.caller), ("agent", p.agent)]
    svg: list[str] = []
    y = 0.0
    for name, samples in lanes:
        label = "caller (left)" if name == "caller" else "agent as heard (right)"
        svg.append(f'<text x="4" y="{y + 14}" class="lane">{label}</text>')
        if samples is not None:
            svg.append(_wave(envelope(samples, BUCKETS, int(d * 8)), y, COLORS[name]))
        else:
            svg.append(f'<text x="{WIDTH / 2}" y="{y + LANE_H / 2}" class="t">no recording</text>')
        y += LANE_H
    band_y = y
    for frm, to, kind, label in p.spans:
        lane_y = 0 if kind == "turn" else (LANE_H if kind == "reply" else 0)
        h = LANE_H if kind != "pause" else 2 * LANE_H
        x0, x1 = _x(frm, d), _x(to, d)
        svg.append(f'<rect x="{x0}" y="{lane_y}" width="{max(1.0, x1 - x0)}" height="{h}" '
                   f'fill="{COLORS.get(kind, "#0002")}"><title>{html.escape(label)}</title></rect>')
    for t, kind, label in p.points:
        x = _x(t, d)
        if kind == "mark":
            svg.append(f'<line x1="{x}" y1="{2 * LANE_H - 8}" x2="{x}" y2="{2 * LANE_H}" stroke="{COLORS["mark"]}">'
                       f'<title>{html.escape(label)}</title></line>')
        else:
            color = COLORS.get(kind, "#000")
            svg.append(f'<line x1="{x}" y1="0" x2="{x}" y2="{2 * LANE_H}" stroke="{color}" stroke-width="1.5">'
                       f'<title>{html.escape(label)}</title></line>')
    svg.append(_axis(d, band_y))
    height = band_y + 24
    facts = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in p.facts)
    lines = "".join(
        f'<tr class="{html.escape(str(t.get("role", "")))}"><td class="t">{_clock(float(t.get("t_ms") or 0))}</td>'
        f'<td>{html.escape(str(t.get("role", "")))}</td><td>{html.escape(str(t.get("text", "")))}'
        f'{" <em>(cut at a barge-in)</em>" if t.get("truncated") else ""}</td></tr>' for t in p.transcript)
    legend = "".join(f'<span><i style="background:{c}"></i>{html.escape(k.replace("_", "-"))}</span>'
                     for k, c in COLORS.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(p.title)}</title>
<style>
body{{font:14px system-ui,sans-serif;margin:24px;color:#222}} h1{{font-size:18px}}
table{{border-collapse:collapse}} th,td{{text-align:left;padding:2px 10px 2px 0;vertical-align:top}}
th{{color:#555;font-weight:600}} svg{{border:1px solid #ddd;background:#fff;max-width:100%}}
.t{{font:11px monospace;fill:#555;color:#555}} .lane{{font:12px system-ui;fill:#333}}
.legend span{{margin-right:12px;font-size:12px}} .legend i{{display:inline-block;width:10px;height:10px;margin-right:4px}}
tr.user td,tr.caller td{{color:#1f4f7f}} tr.assistant td,tr.agent td{{color:#1f6f1f}}
</style></head><body>
<h1>{html.escape(p.title)}</h1>
<table>{facts}</table>
<h2>Timeline</h2>
<div class="legend">{legend}</div>
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}">{"".join(svg)}</svg>
<h2>Transcript</h2>
<table>{lines or '<tr><td>(none)</td></tr>'}</table>
</body></html>
"""


# -- from a bridge report -----------------------------------------------------


def fmt_ms(v: Any) -> str:
    return "—" if v is None else f"{float(v):.0f} ms"


def from_report(report: Mapping[str, Any], timeline: Sequence[Mapping[str, Any]],
                channels: tuple[np.ndarray, np.ndarray] | None) -> Picture:
    """A ``call_ended`` report, its timeline (the registry summary's) and the recording's channels."""
    duration = float(report.get("duration_s") or 0) * 1000
    if channels is not None:
        duration = max(duration, len(channels[0]) / 8)
    rl, fa = report.get("reply_latency_ms") or {}, report.get("first_audio_ms") or {}
    facts = [
        ("call", f'{report.get("call_sid", "")} ({report.get("from", "")} → {report.get("to", "")})'),
        ("when", f'{report.get("started_at", "")} → {report.get("ended_at", "")} ({report.get("duration_s")} s)'),
        ("ended", f'{report.get("ended_reason", "")} ({report.get("reason", "")})'),
        ("agent", f'{report.get("agent", "")} / {report.get("provider", "")}'),
        ("turns / barge-ins", f'{report.get("turns")} / {report.get("barge_ins")}'),
        ("reply latency p50 / p95", f'{fmt_ms(rl.get("p50"))} / {fmt_ms(rl.get("p95"))}'),
        ("first audio p50 / p95", f'{fmt_ms(fa.get("p50"))} / {fmt_ms(fa.get("p95"))}'),
        ("recording", str(report.get("recording") or "none")),
    ]
    if report.get("transfer_to"):
        facts.append(("transferred to", str(report["transfer_to"])))
    caller, agent = channels if channels is not None else (None, None)
    pic = Picture(f'Call {report.get("call_sid", "")}', duration, facts, caller, agent,
                  transcript=list(report.get("transcript") or []))
    speech_at: float | None = None
    for ev in timeline:
        t, kind = float(ev.get("t_ms", 0)), str(ev.get("kind", ""))
        if kind == "caller_speech":
            speech_at = t
        elif kind == "caller_turn_end" and speech_at is not None:
            pic.spans.append((speech_at, t, "turn", f"caller turn {_clock(speech_at)}–{_clock(t)}"))
            speech_at = None
        elif kind == "reply":
            pic.points.append((t, "reply", f"reply {ev.get('item_id', '')} starts"))
        elif kind == "mark":
            pic.points.append((t, "mark", f"mark echoed: turn {ev.get('turn')} at {ev.get('ms')} ms"))
        elif kind == "barge_in":
            pic.points.append((t, "barge_in", f"barge-in ({ev.get('trigger')}), heard {ev.get('heard_ms')} ms, "
                                              f"clear in {ev.get('clear_latency_ms')} ms"))
        elif kind == "tool":
            pic.points.append((t, "tool", f"tool {ev.get('name')}: {ev.get('outcome')} in {ev.get('duration_ms')} ms"))
    for p in report.get("recording_pauses") or []:
        pic.spans.append((float(p["from_ms"]), float(p["to_ms"]), "pause", "recording paused"))
    for tool in report.get("tools") or []:
        pic.facts.append(("tool", f'{tool.get("name")}: {tool.get("outcome")} in {tool.get("duration_ms")} ms'))
    return pic


def points_from(events: Iterable[Mapping[str, Any]]) -> list[tuple[float, str, str]]:
    """Simulator events (``{"t_ms", "dir", "event", ...}``) as points: clears and marks."""
    out = []
    for ev in events:
        kind = str(ev.get("event", ""))
        if kind in ("clear", "mark"):
            out.append((float(ev.get("t_ms", 0)), kind, f'{kind} {ev.get("name", "")}'.strip()))
    return out
