"""What one call did, as the ``call.ended`` line says it (and metrics and history fold in).

Kept apart from the runner so the call's life reads top to bottom there; this
is pure reading of the call's counters, no I/O.
"""

from __future__ import annotations

import statistics
from typing import Any

import trio


def summarize(call: Any) -> dict[str, Any]:  # call: the runner's Call (typed Any: no import cycle)
    """One ended (or ending) call's summary: the ``call.ended`` log line, metrics, history."""
    sp = call.speaker.stats
    lat = sorted(sp.reply_latency_ms)

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None

    return {
        "call_sid": call.start.call_sid if call.start else "", "agent": call.info.agent if call.info else "default",
        "outcome": call.outcome, "reason": call.reason,
        "duration_s": round(trio.current_time() - call._started_at, 3),
        "frames_in": call.stats.frames_in,
        "messages_out": sp.messages_out, "audio_out_ms": sp.audio_out_ms,
        "audio_played_ms": call.speaker.playout.played_ms_total,
        "barge_ins": sp.barge_ins, "discarded_ms": sp.discarded_ms,
        "reply_latency_p50_ms": pct(0.5), "reply_latency_p95_ms": pct(0.95),
        "clear_latency_p50_ms": round(statistics.median(sp.clear_latency_ms), 2)
        if sp.clear_latency_ms else None,
        "jitter": vars(call.jitter.stats),
        "agent_reconnects": call.agent.reconnects if call.agent else 0,
        "agent_dropped_frames": call.agent.dropped_frames if call.agent else 0,
        # Every provider that served the call, and every failover between them (issue #20).
        "agent_providers": list(call.agent.served) if call.agent else [],
        "agent_failovers": [{"from": a, "to": b} for a, b in call.agent.failovers] if call.agent else [],
        "unknown_events": call.stats.unknown_events, "inbound_over_rate": call.rate.dropped,
        "transcript_dropped": call.stats.transcript.dropped, "warnings_suppressed": call.warn.suppressed,
        "tools": call.tools.report() if call.tools else [],
        "pickup_to_audio_ms": call.edges.pickup_to_audio_ms,
        # Every transfer attempt (issue #21): mode, target, outcome, ring time; agent audio held back on hold.
        "transfers": list(call.records.transfers), "held_back_ms": sp.held_back_ms,
    }

