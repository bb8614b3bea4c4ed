"""``simulate-call --html``: the simulated call as the page ``calls show --html`` draws.

The simulator's own view, from the phone's side: the caller as sent (left),
what its playback emulation actually played (right), its caller turns and
the replies it heard, the clears it received and the marks it echoed.
"""

from __future__ import annotations

from typing import Any, Mapping

from twibridge.records.html import Picture, fmt_ms, pcm_from_ulaw, points_from, render
from twibridge.simulate.record import CallResult


def picture(result: CallResult, report: Mapping[str, Any]) -> str:
    """The page for one simulated call and its ``build_report`` dict."""
    latencies = [t["reply_latency_ms"] for t in report.get("turns", []) if t.get("reply_latency_ms") is not None]
    pic = Picture(f"Simulated call {result.call_sid}", result.call_ms, [
        ("call", f"{result.call_sid} ({result.outcome.value}{': ' + result.detail if result.detail else ''})"),
        ("audio sent / heard", f'{report.get("audio_sent_ms")} ms / {report.get("audio_received_ms")} ms'),
        ("turns / barge-ins / clears", f'{len(report.get("turns", []))} / {len(report.get("barge_ins", []))} / '
                                       f'{report.get("clears")}'),
        ("reply latency (each turn)", ", ".join(fmt_ms(v) for v in latencies) or "—"),
        ("marks received / echoed", f'{report.get("marks_received")} / {report.get("marks_echoed")}'),
        ("protocol errors", "; ".join(result.protocol_errors) or "none"),
    ], pcm_from_ulaw(result.caller_ulaw[: result.frames_sent * 160]), pcm_from_ulaw(result.heard_ulaw))
    for t in report.get("turns", []):
        pic.spans.append((t["caller_start_ms"], t["caller_end_ms"], "turn", "caller turn"))
    for s, e in result.played_intervals:
        pic.spans.append((s, e, "reply", "agent audio played"))
    for b in report.get("barge_ins", []):
        pic.points.append((b["caller_start_ms"], "barge_in", f'barge-in; clear after {fmt_ms(b.get("latency_ms"))}'))
    pic.points += [p for p in points_from(e for e in result.events if e.get("dir") == "from_server")
                   if p[1] == "clear"]
    pic.points += [(float(str(e["t_ms"])), "mark", f'mark echoed {e.get("name", "")}') for e in result.events
                   if e.get("dir") == "to_server" and e.get("event") == "mark"]
    return render(pic)
