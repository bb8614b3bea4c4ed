"""Prometheus metrics, with ``prometheus-client``, one registry per server.

A registry per :class:`Metrics` (not the library's global one) keeps several
servers in one process — tests, ``simulate-call`` — from colliding.  Nothing
here is touched per frame except plain integer counters kept on the call;
per-call numbers are folded in when the call ends, and gauges are read at
scrape time, so the audio path pays nothing for metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from twibridge.runtime import Runtime

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0)
#: Call outcomes as metric labels (everything else is folded into "error").
OUTCOMES = {
    "completed": "completed", "caller-dropped": "caller_hung_up", "transferred": "transferred",
    "agent-failed": "agent_failed", "agent-hangup": "completed", "idle-timeout": "idle_timeout",
    "max-duration": "max_duration", "shutdown": "shutdown", "protocol-error": "protocol_error",
    "refused-duplicate": "refused_duplicate",
}


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.active_calls = Gauge("twibridge_active_calls", "Calls live in this process", registry=r)
        self.calls = Counter("twibridge_calls", "Calls by outcome", ["outcome"], registry=r)
        self.frames_in = Counter("twibridge_inbound_frames", "Media frames received from Twilio", registry=r)
        self.messages_out = Counter("twibridge_outbound_messages", "Messages sent to Twilio", registry=r)
        self.frames_dropped = Counter("twibridge_frames_dropped", "Inbound frames dropped (queue full or late)",
                                      registry=r)
        self.frames_gap_filled = Counter("twibridge_frames_gap_filled_ms", "Inbound gaps filled with silence (ms)",
                                         registry=r)
        self.frames_reordered = Counter("twibridge_frames_reordered", "Inbound frames that arrived out of order",
                                        registry=r)
        self.barge_ins = Counter("twibridge_barge_ins", "Caller interruptions acted on", registry=r)
        self.clear_latency = Histogram("twibridge_clear_latency_seconds", "Barge-in trigger to clear sent",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.reply_latency = Histogram("twibridge_reply_latency_seconds",
                                       "Caller end of speech to first reply audio sent",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.agent_reconnects = Counter("twibridge_agent_reconnects", "Agent reconnections", registry=r)
        self.buffer_depth = Gauge("twibridge_inbound_buffer_frames", "Inbound frames queued, all calls",
                                  registry=r)
        self.loop_lag = Histogram("twibridge_event_loop_lag_seconds", "Trio scheduling lag (watchdog probe)",
                                  buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5), registry=r)
        for outcome in set(OUTCOMES.values()) | {"error", "refused_busy", "refused_unsigned"}:
            self.calls.labels(outcome=outcome)

    def refused(self, why: str) -> None:
        """A webhook or socket we turned away: ``busy`` or ``unsigned``."""
        self.calls.labels(outcome=f"refused_{why}").inc()

    def call_ended(self, summary: dict[str, Any], reply_latency_ms: list[float],
                   clear_latency_ms: list[float]) -> None:
        self.calls.labels(outcome=OUTCOMES.get(str(summary.get("outcome")), "error")).inc()
        self.frames_in.inc(summary["frames_in"])
        self.messages_out.inc(summary["messages_out"])
        jitter = summary["jitter"]
        self.frames_dropped.inc(summary["frames_dropped"] + jitter["late_dropped"])
        self.frames_gap_filled.inc(jitter["gap_ms"])
        self.frames_reordered.inc(jitter["reordered"])
        self.barge_ins.inc(summary["barge_ins"])
        self.agent_reconnects.inc(summary["agent_reconnects"])
        for ms in reply_latency_ms:
            self.reply_latency.observe(ms / 1000)
        for ms in clear_latency_ms:
            self.clear_latency.observe(ms / 1000)

    def render(self, rt: "Runtime") -> tuple[bytes, str]:
        self.active_calls.set(len(rt.calls))
        self.buffer_depth.set(sum(c.inbound_depth for c in rt.calls.values()))
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
