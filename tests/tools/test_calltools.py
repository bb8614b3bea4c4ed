"""twibridge.tools.calltools: one call's tool calls, concurrent and bounded, ended with the call."""

from __future__ import annotations

from typing import Any, Mapping

import trio

from conftest import FIXTURES
from fakes.tool_backend import tool_backend
from twibridge.agents.base import CallInfo, ToolCall
from twibridge.config import ToolsConfig
from twibridge.tools.calltools import CallTools, specs
from twibridge.webhooks import signing

SECRET = signing.new_secret()
NAMES = ("slow", "never", "lookup_order")
CALL = CallInfo(call_sid="CA1", stream_sid="MZ1", tools=specs(ToolsConfig.model_validate({
    "secret": SECRET, "functions": [{"name": n, "url": "http://127.0.0.1:9/"} for n in NAMES]})))
SOUND = str(FIXTURES / "audio" / "hello_22k_pcm16.wav")


def config(base: str, **extra: Any) -> ToolsConfig:
    return ToolsConfig.model_validate({"secret": SECRET, "functions": [
        {"name": "slow", "url": f"{base}/slow?s=1"}, {"name": "never", "url": f"{base}/never"},
        {"name": "lookup_order", "url": f"{base}/lookup_order"}], **extra})


class Results:
    def __init__(self) -> None:
        self.got: list[tuple[float, str, str, dict[str, Any]]] = []
        self.changed = trio.Event()

    async def send(self, call_id: str, name: str, output: Mapping[str, Any]) -> None:
        self.got.append((trio.current_time(), call_id, name, dict(output)))
        self.changed.set()
        self.changed = trio.Event()

    async def wait(self, n: int) -> None:
        while len(self.got) < n:
            await self.changed.wait()


class Player:
    def __init__(self) -> None:
        self.events: list[str] = []

    def start_filler(self, item_id: str, loop: bytes) -> None:
        self.events.append("start")

    async def stop_filler(self) -> None:
        self.events.append("stop")


async def test_concurrent_up_to_max_in_flight(autojump_clock: trio.testing.MockClock) -> None:
    results = Results()
    async with tool_backend(SECRET) as (base, backend):
        tools = CallTools(config(base, max_in_flight=2), CALL, results.send)
        async with trio.open_nursery() as nursery:
            await nursery.start(tools.run)
            t0 = trio.current_time()
            for i in range(3):
                tools.submit(ToolCall(f"c{i}", "slow", "{}"))
            await results.wait(3)
            nursery.cancel_scope.cancel()
    assert backend.max_in_flight == 2
    times = sorted(round(t - t0, 1) for t, *_ in results.got)
    assert times == [1.0, 1.0, 2.0]  # two at once, the third after a slot freed
    assert [o["outcome"] for o in tools.report()] == ["ok"] * 3
    assert tools.report()[0]["duration_ms"] == 1000


async def test_the_call_ending_cancels_running_tools(autojump_clock: trio.testing.MockClock,
                                                     captured_logs: Any) -> None:
    results = Results()
    async with tool_backend(SECRET) as (base, backend):
        tools = CallTools(config(base), CALL, results.send)
        async with trio.open_nursery() as nursery:
            await nursery.start(tools.run)
            tools.submit(ToolCall("c1", "never", "{}"))
            await backend.wait_requests(1)
            nursery.cancel_scope.cancel()
        assert tools._client is not None and tools._client.is_closed
    assert results.got == [] and tools.outcomes == []
    assert [e["outcome"] for e in captured_logs.events("tool.done")] == ["cancelled"]
    tools.submit(ToolCall("c2", "never", "{}"))  # after the end: ignored, nothing started


async def test_thinking_sound_plays_while_a_slow_tool_runs(autojump_clock: trio.testing.MockClock) -> None:
    results, player = Results(), Player()
    async with tool_backend(SECRET) as (base, _):
        tools = CallTools(config(base, thinking_sound=SOUND, thinking_after_ms=300), CALL, results.send,
                          player=player)
        async with trio.open_nursery() as nursery:
            await nursery.start(tools.run)
            await tools.sound_ready.wait()  # loaded in a thread: real time, which autojump does not wait for
            tools.submit(ToolCall("quick", "lookup_order", '{"order_number": "1"}'))
            await results.wait(1)
            await trio.sleep(1)
            assert player.events == []  # a quick tool: silence
            tools.submit(ToolCall("c1", "slow", "{}"))
            await results.wait(2)
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    assert player.events == ["start", "stop"]


async def test_too_many_at_once_are_answered_busy() -> None:
    results = Results()
    tools = CallTools(ToolsConfig.model_validate({"secret": SECRET, "max_in_flight": 1, "functions": [
        {"name": "never", "url": "http://127.0.0.1:9/never"}]}), CALL, results.send)
    gate = trio.Event()

    async def blocked(*_: Any) -> Any:
        await gate.wait()
        return {}, "ok"

    tools.executor._run = blocked  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(tools.run)
        for i in range(6):  # 1 running + 4 waiting fit; the 6th does not
            tools.submit(ToolCall(f"c{i}", "never", "{}"))
        await results.wait(1)
        assert results.got[0][1:] == ("c5", "never", {"error": "too many tool calls at once; try again"})
        gate.set()
        await results.wait(6)
        nursery.cancel_scope.cancel()


async def test_only_what_the_call_offers_may_run(autojump_clock: trio.testing.MockClock) -> None:
    results = Results()
    async with tool_backend(SECRET) as (base, backend):
        offered = CallInfo(call_sid="CA1", stream_sid="MZ1", tools=CALL.tools[2:])  # a route's subset
        tools = CallTools(config(base), offered, results.send)
        async with trio.open_nursery() as nursery:
            await nursery.start(tools.run)
            tools.submit(ToolCall("c1", "slow", "{}"))  # configured, but not offered on this call
            await results.wait(1)
            nursery.cancel_scope.cancel()
    assert results.got[0][3] == {"error": "unknown function 'slow'"} and backend.requests == []
