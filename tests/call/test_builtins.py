"""The bridge's own tools: send_dtmf and the recording's pause/resume, through the executor and a real call."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import httpx
import trio

from fakes.ref_agent import RefAgent
from support import Leg, bridge, dtmf_decode, make_config, media_socket, wait_calls
from twibridge.call.builtins import PAUSE_RECORDING, RESUME_RECORDING, call_builtins
from twibridge.call.edges import SEND_DTMF
from twibridge.config import ToolsConfig
from twibridge.config.tools import RESERVED_NAMES
from twibridge.agents.base import CallInfo
from twibridge.tools.executor import BAD_ARGUMENTS, FAILED, OK, UNKNOWN, Executor
from twibridge.twilio import emulation as emu

CALL = CallInfo(call_sid="CA" + "0" * 32, stream_sid="MZ" + "0" * 32)


def no_client() -> httpx.AsyncClient:
    raise AssertionError("a built-in must not make a request")


async def test_the_executor_runs_them_checked_and_bounded() -> None:
    pressed: list[object] = []

    def dtmf(digits: object) -> Mapping[str, Any]:
        pressed.append(digits)
        return {"error": "digits must be 0-9, *, #, A-D"} if digits == "x" else {"sent": True, "duration_ms": 200}

    async def pause() -> dict[str, Any]:
        return {"ok": True, "status": "paused"}

    async def resume() -> dict[str, Any]:
        return {"ok": False, "error": "this call is not being recorded"}

    ex = Executor(ToolsConfig(), no_client, builtins=call_builtins(dtmf, (pause, resume)))
    ok = await ex.run(CALL, "t1", "send_dtmf", '{"digits": "1#"}')
    assert (ok.outcome, ok.output) == (OK, {"sent": True, "duration_ms": 200})
    bad = await ex.run(CALL, "t2", "send_dtmf", {"digits": "x"})
    assert (bad.outcome, bad.output) == (FAILED, {"error": "digits must be 0-9, *, #, A-D"})
    missing = await ex.run(CALL, "t3", "send_dtmf", {})
    assert missing.outcome == BAD_ARGUMENTS and pressed == ["1#", "x"]
    assert (await ex.run(CALL, "t4", "pause_recording", {})).output == {"ok": True, "status": "paused"}
    assert (await ex.run(CALL, "t5", "resume_recording", {})).outcome == FAILED
    # Not recorded: the recording's two are not offered, and not run.
    unrecorded = Executor(ToolsConfig(), no_client, builtins=call_builtins(dtmf, None))
    assert (await unrecorded.run(CALL, "t6", "pause_recording", {})).outcome == UNKNOWN


def test_their_names_are_reserved() -> None:
    assert {SEND_DTMF.name, PAUSE_RECORDING.name, RESUME_RECORDING.name} <= RESERVED_NAMES


async def run_call(agent: RefAgent, tmp_path: Path, **cfg: Any) -> tuple[Leg, Any, dict[str, Any]]:
    async with trio.open_nursery() as nursery:
        await agent.serve(nursery)
        config = make_config(agent={"provider": "websocket", "websocket": {"url": agent.url}}, **cfg)
        async with bridge(config) as (url, rt):
            async with media_socket(url) as ws:
                leg = Leg(ws)
                await leg.start()
                await agent.wait_for(lambda: agent.live == 1)
                await ws.send_message(emu.build_dtmf(leg._next(), leg.stream_sid, "*"))  # the agent asks
                await agent.wait_for(lambda: any(m.get("type") == "tool_result" for m in agent.received))
                await leg.collect(idle_s=1.0)
                await leg.stop()
            await wait_calls(rt, 0)
            (summary,) = await rt.registry.recent(1)
        nursery.cancel_scope.cancel()
    (result,) = [m for m in agent.received if m.get("type") == "tool_result"]
    return leg, summary, result


async def test_send_dtmf_plays_the_keys_on_the_line(tmp_path: Path) -> None:
    agent = RefAgent(reply_ms=200)
    agent.tool_calls = [("send_dtmf", {"digits": "4#7"})]
    with trio.fail_after(30):
        leg, summary, result = await run_call(agent, tmp_path)
    start = agent.received[0]
    assert "send_dtmf" in [t["name"] for t in start["tools"]]
    assert "pause_recording" not in [t["name"] for t in start["tools"]]  # not recorded
    assert result["output"] == {"sent": True, "duration_ms": 600}
    assert dtmf_decode(bytes(leg.audio)).startswith("4#7")  # what a phone menu would hear
    (tool,) = summary["tools"]
    assert (tool["name"], tool["outcome"]) == ("send_dtmf", "ok")
    assert [(t["name"], t["outcome"]) for t in summary["report"]["tools"]] == [("send_dtmf", "ok")]


async def test_the_agent_pauses_the_recording(tmp_path: Path) -> None:
    agent = RefAgent(reply_ms=200)
    agent.tool_calls = [("pause_recording", {})]
    with trio.fail_after(30):
        _leg, summary, result = await run_call(agent, tmp_path, recording={"enabled": True, "dir": str(tmp_path)})
    assert result["output"] == {"ok": True, "status": "paused"}
    report = summary["report"]
    (span,) = report["recording_pauses"]
    assert span["from_ms"] >= 0
    assert [(t["name"], t["outcome"]) for t in report["tools"]] == [("pause_recording", "ok")]
