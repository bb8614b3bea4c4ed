"""Tool calls through the whole bridge: a Twilio leg, the real server, our-protocol agent, a real backend.

The reference agent (``fakes.ref_agent``) asks for its ``tool_calls`` when the
caller presses ``*`` and reads each result out as a reply; the backend is
``fakes.tool_backend``.  Real sockets and the real clock throughout.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import trio

from conftest import FIXTURES
from fakes import silence
from fakes.openai_realtime import API_KEY, FakeRealtime
from fakes.ref_agent import RefAgent
from fakes.tool_backend import ToolBackend, tool_backend
from support import ACCOUNT_SID, TOKEN, Leg, bridge, frames, make_config, media_socket, tone, wait_calls
from twibridge.simulate import CallOptions, simulate_call
from twibridge.runtime import Runtime
from twibridge.twilio import emulation as emu
from twibridge.twilio import protocol as tw
from twibridge.webhooks import signing

SECRET = signing.new_secret()
SOUND = str(FIXTURES / "audio" / "hello_22k_pcm16.wav")


@asynccontextmanager
async def setup(tool_calls: list[tuple[str, dict[str, Any]]], **tools: Any
                ) -> AsyncIterator[tuple[str, Runtime, RefAgent, ToolBackend]]:
    async with tool_backend(SECRET) as (base, backend), trio.open_nursery() as nursery:
        agent = RefAgent(reply_ms=400)
        agent.tool_calls = tool_calls
        await agent.serve(nursery)
        fns = [{"name": "lookup_order", "url": f"{base}/lookup_order", "description": "Look up an order",
                "parameters": {"type": "object", "properties": {"order_number": {"type": "string"}},
                               "required": ["order_number"]}},
               {"name": "slow", "url": f"{base}/slow?s=1.5"}, {"name": "never", "url": f"{base}/never"}]
        cfg = make_config(agent={"provider": "websocket", "websocket": {"url": agent.url}},
                          tools={"secret": SECRET, "functions": fns, **tools})
        async with bridge(cfg) as (url, rt):
            yield url, rt, agent, backend
        nursery.cancel_scope.cancel()


async def press_star(leg: Leg, agent: RefAgent) -> None:
    await agent.wait_for(lambda: agent.live == 1)
    await leg.ws.send_message(emu.build_dtmf(leg._next(), leg.stream_sid, "*"))


def results(agent: RefAgent) -> list[dict[str, Any]]:
    return [m for m in agent.received if m.get("type") == "tool_result"]


async def test_the_agent_calls_a_function_and_speaks_its_result(captured_logs: Any) -> None:
    with trio.fail_after(20):
        async with setup([("lookup_order", {"order_number": "42"})]) as (url, rt, agent, backend):
            async with media_socket(url) as ws:
                leg = Leg(ws)
                await leg.start()
                await press_star(leg, agent)
                await leg.collect(until_ms_of_audio=400)
                await leg.stop()
                await wait_calls(rt, 0)
    start = agent.received[0]
    assert [t["name"] for t in start["tools"]] == ["lookup_order", "slow", "never", "send_dtmf"]  # + the built-in
    assert results(agent) == [{"type": "tool_result", "call_id": "tool-1", "name": "lookup_order",
                               "output": {"order_number": "42", "status": "shipped"}}]
    body = backend.requests[0].json
    assert body["call"]["call_sid"] == leg.call_sid and "twibridge_token" not in body["call"]["params"]
    assert len(leg.audio) >= 400 * 8  # the reply that read the result out
    (ended,) = captured_logs.events("call.ended")
    (entry,) = ended["tools"]
    assert (entry["name"], entry["outcome"]) == ("lookup_order", "ok") and entry["t_ms"] >= 0
    assert rt.metrics is not None
    text = rt.metrics.render(rt)[0].decode()
    assert 'twibridge_tool_duration_seconds_count{outcome="ok",tool="lookup_order"} 1.0' in text


async def test_two_tools_at_once_and_errors_reach_the_agent() -> None:
    calls = [("slow", {}), ("slow", {}), ("lookup_order", {}), ("no_such_tool", {})]
    with trio.fail_after(20):
        async with setup(calls) as (url, rt, agent, backend):
            async with media_socket(url) as ws:
                leg = Leg(ws)
                await leg.start()
                await press_star(leg, agent)
                await agent.wait_for(lambda: len(results(agent)) == 4)
                await leg.stop()
                await wait_calls(rt, 0)
    assert backend.max_in_flight == 2  # the two slow ones ran side by side
    by_id = {m["call_id"]: m["output"] for m in results(agent)}
    assert by_id["tool-1"] == by_id["tool-2"] == {"slept": True}
    assert "required property" in by_id["tool-3"]["error"]
    assert by_id["tool-4"] == {"error": "unknown function 'no_such_tool'"}


async def test_thinking_sound_then_clear_at_the_result_and_barge_in_stops_it(captured_logs: Any) -> None:
    with trio.fail_after(30):
        async with setup([("slow", {})], thinking_sound=SOUND, thinking_after_ms=200) as (url, rt, agent, _):
            async with media_socket(url) as ws:
                leg = Leg(ws)
                await leg.start()
                await press_star(leg, agent)
                await leg.collect(until_ms_of_audio=300)  # the thinking sound, before any result
                assert results(agent) == []
                await agent.wait_for(lambda: results(agent))
                await leg.collect(idle_s=1.0)  # the clear, then the reply reading the result
                kinds = [type(e).__name__ for e in leg.received]
                first_clear = kinds.index("OutClear")
                assert "OutMedia" in kinds[:first_clear] and "OutMedia" in kinds[first_clear:]

                # Again, and this time the caller talks over the thinking sound.
                leg.received.clear()
                before = len(results(agent))
                await leg.ws.send_message(emu.build_dtmf(leg._next(), leg.stream_sid, "*"))
                await leg.collect(until_ms_of_audio=len(leg.audio) // 8 + 300)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(leg.collect, None, 1.0)  # marks echoed, clear seen, meanwhile
                    for frame in frames(tone(800)):
                        await leg.media(frame)
                        await trio.sleep(0.02)
                    await agent.wait_for(lambda: len(results(agent)) == before + 1)  # the tool was not cancelled
                await leg.stop()
                await wait_calls(rt, 0)
    assert any(isinstance(e, tw.OutClear) for e in leg.received)
    (barge,) = captured_logs.events("call.barge_in")
    assert barge["item_id"] == ""  # a thinking sound, not an agent item
    # The agent never hears of the thinking sound: no interrupt names it.
    assert not [m for m in agent.received if m.get("type") in ("interrupt", "mark")
                and not str(m.get("item_id", "")).startswith("reply-")]


def task_count() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    return walk(trio.lowlevel.current_root_task())


async def test_hanging_up_during_a_tool_cancels_it_and_leaks_nothing(captured_logs: Any) -> None:
    with trio.fail_after(20):
        async with setup([("never", {})]) as (url, rt, agent, backend):
            await trio.sleep(0.2)
            baseline = task_count()
            async with media_socket(url) as ws:
                leg = Leg(ws)
                await leg.start()
                await press_star(leg, agent)
                await backend.wait_requests(1)
                await leg.stop()
                await wait_calls(rt, 0)
            await agent.wait_for(lambda: agent.live == 0)
            with trio.fail_after(5):
                while backend.disconnects < 1 or task_count() > baseline:
                    await trio.sleep(0.05)
    assert results(agent) == []
    assert [e["outcome"] for e in captured_logs.events("tool.done")] == ["cancelled"]
    (ended,) = captured_logs.events("call.ended")
    assert ended["tools"] == [] and ended["outcome"] == "completed"


async def test_openai_parallel_function_calls_get_outputs_then_one_response_create(captured_logs: Any) -> None:
    fake = FakeRealtime(reply_ms=400)
    fake.omit_function_name = True  # the older shape: the name comes with response.output_item.done
    fake.function_call = [("lookup_order", '{"order_number": "42"}'), ("slow", "{}")]
    async with tool_backend(SECRET) as (base, backend), trio.open_nursery() as nursery:
        url = await fake.serve(nursery)
        fns = [{"name": "lookup_order", "url": f"{base}/lookup_order"}, {"name": "slow", "url": f"{base}/slow?s=1"}]
        cfg = make_config(agent={"provider": "openai", "openai": {"api_key": API_KEY, "url": url}},
                          tools={"secret": SECRET, "functions": fns})
        with trio.fail_after(30):
            async with bridge(cfg) as (server, rt):
                result = await simulate_call(server, TOKEN, silence(300) + tone(700) + silence(5000),
                                             CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
                await wait_calls(rt, 0)
            await fake.wait_for(lambda: fake.live == 0)
        nursery.cancel_scope.cancel()
    assert result.protocol_errors == []
    tools = fake.of_type("session.update")[0]["session"]["tools"]
    assert [t["name"] for t in tools] == ["end_call", "transfer_to_human", "lookup_order", "slow", "send_dtmf"]
    outputs = [m["item"] for m in fake.of_type("conversation.item.create")]
    assert [o["type"] for o in outputs] == ["function_call_output"] * 2
    by_output = {o["call_id"]: o["output"] for o in outputs}
    assert any('"status":"shipped"' in v for v in by_output.values()) and len(backend.requests) == 2
    kinds = [m["type"] for m in fake.received if m["type"] in ("conversation.item.create", "response.create")]
    assert kinds == ["conversation.item.create", "conversation.item.create", "response.create"]
    assert fake.errors_sent == []  # no second active response, no unknown call_id
