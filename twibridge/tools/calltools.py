"""One call's tool calls: concurrent, bounded, inside the call's nursery.

The call's runner starts :meth:`CallTools.run` in its nursery and hands it
each :class:`~twibridge.agents.base.ToolCall` (:meth:`submit`, which never
waits: the agent's events keep flowing while tools run).  Each runs in its
own task, at most ``[tools] max_in_flight`` at once (more wait their turn, a
bounded number; beyond that the model hears "busy"); its result goes back
through ``send_result``.  The call's end cancels them all, and the HTTP
client (made on the first configured function called) is closed in
``finally``: nothing outlives the call.

A barge-in does not cancel a running tool (its result still goes to the
model, which decides); it only stops the thinking sound.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping

import httpx
import trio

from twibridge.tools.spec import CallIdentity, ToolCall
from twibridge.config import ToolsConfig
from twibridge.logs import get_logger
from twibridge.tools.executor import BUSY, Builtin, Executor, ToolMetrics, ToolOutcome, specs
from twibridge.tools.thinking import FillerPlayer, Thinking, load_sound

log = get_logger("twibridge.tools")

#: Tool calls that may wait for a free slot, per ``max_in_flight`` (beyond: answered "busy").
WAITING_PER_SLOT = 4
#: Bound on handing one result to the agent.
SEND_TIMEOUT_S = 5.0

__all__ = ["CallTools", "specs"]

SendResult = Callable[[str, str, Mapping[str, Any]], Awaitable[None]]


class CallTools:
    def __init__(self, config: ToolsConfig, call: CallIdentity, send_result: SendResult, *,
                 player: FillerPlayer | None = None, metrics: ToolMetrics | None = None,
                 builtins: Mapping[str, Builtin] = {},
                 on_done: Callable[[ToolOutcome], None] | None = None) -> None:
        self.config = config
        self.call = call
        self.send_result = send_result
        self.player = player
        self.executor = Executor(config, self._http, builtins=builtins, metrics=metrics)
        self.t0 = trio.current_time()
        #: Only what the call's agent was offered may run (a route may offer a subset).
        self.allowed = frozenset(t.name for t in call.tools)
        #: Every finished tool call, for the call's summary (and the simulate-call report).
        self.outcomes: list[ToolOutcome] = []
        self.on_done = on_done  # e.g. the call's records (the post-call report's ``tools``)
        # Counting from the start, so tools begun while the sound still loads get it too.
        self.thinking = Thinking(b"", config.thinking_after_ms / 1000, player) if (
            player is not None and config.thinking_sound and config.functions) else None
        #: Set once the thinking sound is loaded (or failed to load, or is not configured).
        self.sound_ready = trio.Event()
        self._client: httpx.AsyncClient | None = None
        self._limiter = trio.CapacityLimiter(config.max_in_flight)
        self._tasks = 0
        self._nursery: trio.Nursery | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # No httpx timeout: post_signed's deadline (the tool's timeout_s) is the one that counts.
            self._client = httpx.AsyncClient(timeout=None, follow_redirects=False)
        return self._client

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Live as long as the call; tool calls run in this nursery."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()  # the call goes on at once; the sound loads meanwhile
                if self.thinking is not None:
                    try:
                        self.thinking.sound = await trio.to_thread.run_sync(load_sound, self.config.thinking_sound)
                    except Exception as exc:  # checked at start; a file gone since only loses the sound
                        log.warning("tool.thinking_sound_unreadable", error=str(exc)[:120])
                    else:
                        nursery.start_soon(self.thinking.run)
                self.sound_ready.set()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            if self._client is not None:
                with trio.move_on_after(1.0, shield=True):
                    await self._client.aclose()

    def submit(self, ev: ToolCall) -> None:
        """Run ``ev`` (in the background); never waits."""
        if self._nursery is None:  # the call is ending
            return
        if self._tasks >= self.config.max_in_flight * (1 + WAITING_PER_SLOT):
            self._nursery.start_soon(self._answer, ev.call_id, ev.name,
                                     {"error": "too many tool calls at once; try again"}, BUSY)
            return
        self._tasks += 1
        self._nursery.start_soon(self._one, ev)

    async def _one(self, ev: ToolCall) -> None:
        try:
            async with self._limiter:
                if self.thinking is not None:
                    self.thinking.begin()
                try:
                    result = await self.executor.run(self.call, ev.call_id, ev.name, ev.arguments,
                                                     allowed=self.allowed)
                finally:
                    if self.thinking is not None:
                        self.thinking.end()
        finally:
            self._tasks -= 1
        self.finished(result)
        await self._answer(ev.call_id, ev.name, result.output, result.outcome)

    def finished(self, result: ToolOutcome) -> None:
        """One tool call done (here, or through ``POST /vapi/server``): kept for the summary and report."""
        self.outcomes.append(result)
        if self.on_done is not None:
            self.on_done(result)

    async def _answer(self, call_id: str, name: str, output: Mapping[str, Any], outcome: str) -> None:
        with trio.move_on_after(SEND_TIMEOUT_S) as scope:
            await self.send_result(call_id, name, output)
        if scope.cancelled_caught:
            log.warning("tool.result_not_delivered", tool=name[:64], outcome=outcome)

    def report(self) -> list[dict[str, Any]]:
        """``[{name, t_ms, duration_ms, outcome}]``: t_ms from the call's start event."""
        return [{"name": o.name, "t_ms": round((o.started_at - self.t0) * 1000),
                 "duration_ms": round(o.duration_s * 1000), "outcome": o.outcome} for o in self.outcomes]
