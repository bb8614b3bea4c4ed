"""What all calls of one server process share: config, registry, shutdown.

Kept apart from the web app so the call runner can be driven by any
transport (Quart's websocket in production, a plain trio-websocket server in
benchmarks) and tests can build one without HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import trio

from twibridge.config import Config
from twibridge.state.memory import MemoryRegistry
from twibridge.state.registry import CallRegistry

if TYPE_CHECKING:
    from twibridge.agents.base import AgentProvider
    from twibridge.records.delivery import Deliverer


class MetricsSink(Protocol):
    """What calls and the server report to (``twibridge.server.metrics.Metrics``).

    A protocol here, so the runtime (below the server wing) never imports it.
    """

    def call_ended(self, summary: dict[str, Any], reply_latency_ms: Sequence[float],
                   clear_latency_ms: Sequence[float]) -> None: ...
    def refused(self, why: str) -> None: ...
    def observe_loop_lag(self, seconds: float) -> None: ...
    def observe_tool(self, tool: str, outcome: str, seconds: float) -> None: ...
    def config_reload(self, outcome: str) -> None: ...
    def routing_lookup(self, outcome: str) -> None: ...
    def render(self, rt: Runtime) -> tuple[bytes, str]: ...


@dataclass
class Runtime:
    #: The current config: swapped whole by a reload (``server/reload.py``); a live
    #: call keeps the snapshot it started with (``Call.cfg``).
    config: Config
    registry: CallRegistry = field(default_factory=MemoryRegistry)
    #: Set when SIGTERM/SIGINT arrives: refuse new calls, let live ones finish.
    stopping: trio.Event = field(default_factory=trio.Event)
    #: Set when the drain period is over: live calls close with 1001.
    drained: trio.Event = field(default_factory=trio.Event)
    #: Live calls in this process, by CallSid (the registry may span processes).
    calls: dict[str, Any] = field(default_factory=dict)
    #: Sockets accepted but not yet past ``start`` (they count against max_calls).
    pending: int = 0
    provider_factory: Callable[[Config], "AgentProvider"] | None = None
    metrics: MetricsSink | None = None
    #: The bridge's own sounds, μ-law 8 kHz, loaded once per config (twibridge/call/sounds.py).
    sounds: dict[str, bytes] = field(default_factory=dict)
    #: Notified whenever a call ends (tests and drain wait on it).
    calls_changed: trio.Event = field(default_factory=trio.Event)
    #: Post-call reports ([webhooks] call_ended): spooled, then delivered by the server's task.
    deliveries: "Deliverer | None" = None

    @property
    def active(self) -> int:
        return len(self.calls) + self.pending

    def notify_calls_changed(self) -> None:
        self.calls_changed.set()
        self.calls_changed = trio.Event()

    def calls_on_route(self, index: int) -> int:
        """Live calls of this process that ``routes[index]`` decided (its ``max_calls``)."""
        return sum(1 for call in list(self.calls.values()) if getattr(call, "route", None) == index)

    def provider(self, config: Config | None = None) -> "AgentProvider":
        """A provider for one call, from that call's config (its routed agent
        as ``agent``: :func:`twibridge.routing.percall.call_config`)."""
        cfg = config or self.config
        if self.provider_factory is not None:
            return self.provider_factory(cfg)
        from twibridge.agents import make_provider

        return make_provider(cfg)
