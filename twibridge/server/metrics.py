"""Prometheus metrics, with ``prometheus-client``, one registry per server.

A registry per :class:`Metrics` (not the library's global one) keeps several
servers in one process — tests, ``simulate-call`` — from colliding.  Nothing
here is touched per frame except plain integer counters kept on the call;
per-call numbers are folded in when the call ends, and gauges are read at
scrape time, so the audio path pays nothing for metrics.

Every metric is listed with its meaning in ``docs/operations.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from twibridge.runtime import Runtime

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
#: Call outcomes (the ``call.ended`` line's ``outcome``) as metric labels;
#: anything else is folded into "error".
OUTCOMES = {
    "completed": "completed", "caller-dropped": "caller_hung_up", "transferred": "transferred",
    "agent-failed": "agent_failed", "agent-hangup": "completed", "idle-timeout": "idle_timeout",
    "max-duration": "max_duration", "shutdown": "shutdown", "protocol-error": "protocol_error",
    "refused-duplicate": "refused_duplicate", "voicemail": "voicemail", "machine-hangup": "voicemail",
    "caller-idle": "caller_idle",
}
#: Webhooks/sockets turned away before a call existed (``refused(why)``).
REFUSALS = ("busy", "unsigned", "duplicate", "rejected")
#: ``twibridge_config_reloads_total{outcome}`` and ``twibridge_routing_lookups_total{outcome}``.
RELOAD_OUTCOMES = ("applied", "refused")
LOOKUP_OUTCOMES = ("answered", "rejected", "failed")
#: Why inbound caller frames were thrown away (``twibridge_inbound_frames_dropped_total``).
DROP_REASONS = ("late", "duplicate", "agent_buffer")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ... (read
        # from /proc at scrape time): the dashboard's CPU/RSS/fds panels and the restart alert.
        ProcessCollector(registry=r)
        self.active_calls = Gauge("twibridge_active_calls", "Calls live in this process", registry=r)
        self.pending_sockets = Gauge("twibridge_pending_sockets",
                                     "Media sockets accepted but not yet past 'start'", registry=r)
        self.draining = Gauge("twibridge_draining", "1 while shutting down (new calls refused)", registry=r)
        self.calls = Counter("twibridge_calls", "Calls by outcome, refusals included", ["outcome"], registry=r)
        self.frames_in = Counter("twibridge_inbound_frames", "Media frames received from Twilio", registry=r)
        self.messages_out = Counter("twibridge_outbound_messages",
                                    "Messages sent to Twilio (media, mark, clear)", registry=r)
        self.audio_out = Counter("twibridge_outbound_audio_seconds", "Reply audio sent to Twilio", registry=r)
        self.frames_dropped = Counter("twibridge_inbound_frames_dropped", "Caller frames thrown away, by reason",
                                      ["reason"], registry=r)
        self.frames_gap_filled = Counter("twibridge_inbound_frames_gap_filled",
                                         "Missing inbound frames replaced by silence (20 ms each)", registry=r)
        self.frames_reordered = Counter("twibridge_inbound_frames_reordered",
                                        "Inbound frames that arrived out of order (and were put back)", registry=r)
        self.barge_ins = Counter("twibridge_barge_ins", "Caller interruptions acted on", registry=r)
        self.clear_latency = Histogram("twibridge_clear_latency_seconds", "Barge-in trigger to clear sent",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.reply_latency = Histogram("twibridge_reply_latency_seconds",
                                       "Caller end of speech to first reply audio sent",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.tool_duration = Histogram("twibridge_tool_duration_seconds", "Tool calls, by function and outcome",
                                       ["tool", "outcome"], registry=r,
                                       buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30))
        self.pickup_to_audio = Histogram("twibridge_pickup_to_audio_seconds",
                                         "Stream start to the first audio sent to the caller (greeting sound or "
                                         "agent)", buckets=_LATENCY_BUCKETS, registry=r)
        self.agent_reconnects = Counter("twibridge_agent_reconnects", "Agent reconnections", registry=r)
        self.agent_failovers = Counter("twibridge_agent_failovers", "Calls moved from one agent provider to the next",
                                       ["from", "to"], registry=r)
        self.buffer_depth = Gauge("twibridge_inbound_buffer_frames",
                                  "Inbound frames queued (channel + jitter buffer), all calls", registry=r)
        self.loop_lag = Histogram("twibridge_event_loop_lag_seconds",
                                  "How late the Trio loop woke a periodic probe (scheduling lag)",
                                  buckets=_LAG_BUCKETS, registry=r)
        # Set by a shared registry backend (registry_redis) when it cannot reach its store.
        self.registry_errors = Counter("twibridge_registry_errors", "Failed call-registry operations, by op",
                                       ["op"], registry=r)
        self.registry_degraded = Gauge("twibridge_registry_degraded",
                                       "1 while the shared call registry is unreachable (local fallback)",
                                       registry=r)
        # Post-call reports (twibridge.records.delivery); depth and age are read at scrape time.
        self.webhook_deliveries = Counter("twibridge_webhook_deliveries", "call_ended delivery attempts by outcome "
                                          "(delivered, retry, failed)", ["outcome"], registry=r)
        self.webhook_spool_depth = Gauge("twibridge_webhook_spool_depth", "Reports waiting in the spool", registry=r)
        self.webhook_spool_oldest = Gauge("twibridge_webhook_spool_oldest_pending_seconds",
                                          "Age of the oldest report waiting in the spool", registry=r)
        for outcome in ("delivered", "retry", "failed"):
            self.webhook_deliveries.labels(outcome=outcome)
        self.agent_calls = Counter("twibridge_agent_calls", "Ended calls by the agent that served them "
                                   "(configured names: default = [agent])", ["agent"], registry=r)
        self.config_reloads = Counter("twibridge_config_reloads", "Config reloads (SIGHUP), by outcome",
                                      ["outcome"], registry=r)
        self.routing_lookups = Counter("twibridge_routing_lookups", "Pre-call lookups, by outcome "
                                       "(failed: the static routes decided)", ["outcome"], registry=r)
        self.agent_calls.labels(agent="default")
        for outcome in RELOAD_OUTCOMES:
            self.config_reloads.labels(outcome=outcome)
        for outcome in LOOKUP_OUTCOMES:
            self.routing_lookups.labels(outcome=outcome)
        for outcome in set(OUTCOMES.values()) | {"error"} | {f"refused_{why}" for why in REFUSALS}:
            self.calls.labels(outcome=outcome)
        for reason in DROP_REASONS:
            self.frames_dropped.labels(reason=reason)

    def refused(self, why: str) -> None:
        """A webhook or socket we turned away: ``busy``, ``unsigned``, ``duplicate`` or ``rejected`` (by the lookup)."""
        self.calls.labels(outcome=f"refused_{why}").inc()

    def call_ended(self, summary: dict[str, Any], reply_latency_ms: Sequence[float],
                   clear_latency_ms: Sequence[float]) -> None:
        """Fold one ended call's summary (the ``call.ended`` log line) in."""
        self.calls.labels(outcome=OUTCOMES.get(str(summary.get("outcome")), "error")).inc()
        # The call's agent is a configured name (routing.percall checks it), so the label set stays bounded.
        self.agent_calls.labels(agent=str(summary.get("agent") or "default")).inc()
        self.frames_in.inc(summary.get("frames_in", 0))
        self.messages_out.inc(summary.get("messages_out", 0))
        self.audio_out.inc(summary.get("audio_out_ms", 0) / 1000)
        jitter = summary.get("jitter") or {}
        for reason, n in (("late", jitter.get("late_dropped", 0)),
                          ("duplicate", jitter.get("duplicates", 0)),
                          ("agent_buffer", summary.get("agent_dropped_frames", 0))):
            if n:
                self.frames_dropped.labels(reason=reason).inc(n)
        self.frames_gap_filled.inc(jitter.get("gap_ms", 0) // 20)
        self.frames_reordered.inc(jitter.get("reordered", 0))
        self.barge_ins.inc(summary.get("barge_ins", 0))
        self.agent_reconnects.inc(summary.get("agent_reconnects", 0))
        for switch in summary.get("agent_failovers") or ():
            self.agent_failovers.labels(**{"from": switch["from"], "to": switch["to"]}).inc()
        for ms in reply_latency_ms:
            self.reply_latency.observe(ms / 1000)
        pickup = summary.get("pickup_to_audio_ms")
        if isinstance(pickup, (int, float)):
            self.pickup_to_audio.observe(pickup / 1000)
        for ms in clear_latency_ms:
            self.clear_latency.observe(ms / 1000)

    def observe_tool(self, tool: str, outcome: str, seconds: float) -> None:
        self.tool_duration.labels(tool=tool, outcome=outcome).observe(seconds)
    def webhook_delivery(self, outcome: str) -> None:
        self.webhook_deliveries.labels(outcome=outcome).inc()

    def observe_loop_lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)

    def config_reload(self, outcome: str) -> None:
        self.config_reloads.labels(outcome=outcome).inc()

    def routing_lookup(self, outcome: str) -> None:
        self.routing_lookups.labels(outcome=outcome).inc()

    def render(self, rt: "Runtime") -> tuple[bytes, str]:
        """The exposition text; gauges are read from the runtime now (scrape time)."""
        self.active_calls.set(len(rt.calls))
        self.pending_sockets.set(rt.pending)
        self.draining.set(1 if rt.stopping.is_set() else 0)
        self.buffer_depth.set(sum(c.inbound_depth for c in list(rt.calls.values())))
        if rt.deliveries is not None:
            self.webhook_spool_depth.set(rt.deliveries.depth)
            self.webhook_spool_oldest.set(round(rt.deliveries.oldest_pending_s(), 3))
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
