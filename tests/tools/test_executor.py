"""twibridge.tools.executor: one tool call against a real local HTTP backend, every way it can go."""

from __future__ import annotations

import json
from typing import Any, Mapping

import httpx
import pytest
import trio

from fakes.tool_backend import tool_backend
from twibridge.agents.base import CallInfo, ToolSpec
from twibridge.config import ToolsConfig
from twibridge.tools import executor as ex
from twibridge.webhooks import signing

SECRET = signing.new_secret()
SCHEMA = {"type": "object", "properties": {"order_number": {"type": "string"}}, "required": ["order_number"]}
CALL = CallInfo(call_sid="CA1", stream_sid="MZ1", from_number="+15550001111", to_number="+15550002222",
                params={"CallSid": "CA1", "campaign": "x"})


class Seen:
    def __init__(self) -> None:
        self.observed: list[tuple[str, str, float]] = []

    def observe_tool(self, tool: str, outcome: str, seconds: float) -> None:
        self.observed.append((tool, outcome, seconds))


def tools_config(base: str, **extra: Any) -> ToolsConfig:
    fns = [{"name": "lookup_order", "url": f"{base}/lookup_order", "parameters": SCHEMA, "description": "d"},
           {"name": "never", "url": f"{base}/never"},
           {"name": "never_fast", "url": f"{base}/never", "timeout_s": 0.5},
           {"name": "fail", "url": f"{base}/500"},
           {"name": "garbage", "url": f"{base}/garbage"},
           {"name": "listing", "url": f"{base}/list"},
           {"name": "closed", "url": "http://127.0.0.1:9/x"}]
    return ToolsConfig.model_validate({"secret": SECRET, "functions": fns, **extra})


async def run(cfg: ToolsConfig, name: str, arguments: str | Mapping[str, Any] = '{"order_number": "42"}',
              metrics: Seen | None = None, builtins: Mapping[str, ex.Builtin] = {}) -> ex.ToolOutcome:
    async with httpx.AsyncClient(timeout=None) as client:
        return await ex.Executor(cfg, lambda: client, metrics=metrics, builtins=builtins).run(
            CALL, "call_1", name, arguments)


# -- sans-IO ------------------------------------------------------------------


def test_arguments_are_checked_against_the_schema() -> None:
    assert ex.check_arguments(SCHEMA, '{"order_number": "42"}') == {"order_number": "42"}
    assert ex.check_arguments({"type": "object"}, "") == {}
    for raw, why in [("{oops", "not valid JSON"), ("[1]", "must be a JSON object"),
                     ("{}", "'order_number' is a required property"),
                     ('{"order_number": 42}', "at order_number: 42 is not of type 'string'")]:
        with pytest.raises(ex.ToolError, match=why):
            ex.check_arguments(SCHEMA, raw)


def test_answers_become_outputs() -> None:
    assert ex.answer_output(200, b'{"status":"shipped"}') == ({"status": "shipped"}, "ok")
    assert ex.answer_output(201, b'"fine"') == ({"result": "fine"}, "ok")
    assert ex.answer_output(503, b"{}") == ({"error": "the backend answered HTTP 503"}, "http_error")
    assert ex.answer_output(200, b"<html>") == ({"error": "the backend's answer is not valid JSON"}, "bad_answer")


def test_request_body_is_the_documented_shape() -> None:
    body = json.loads(ex.request_body("lookup_order", "call_1", {"order_number": "42"}, CALL))
    assert body == {"name": "lookup_order", "arguments": {"order_number": "42"}, "tool_call_id": "call_1",
                    "call": {"call_sid": "CA1", "stream_sid": "MZ1", "from": "+15550001111", "to": "+15550002222",
                             "params": {"CallSid": "CA1", "campaign": "x"}}}


def test_specs_list_functions_then_builtins() -> None:
    cfg = tools_config("http://127.0.0.1:9")
    b = ex.Builtin(ToolSpec("send_dtmf", "press keys", {"type": "object"}), lambda c, a: _ok())
    names = [s.name for s in ex.specs(cfg, {"send_dtmf": b})]
    assert names[:2] == ["lookup_order", "never"] and names[-1] == "send_dtmf"


async def _ok() -> Mapping[str, Any]:
    return {"ok": True}


# -- against a real backend ------------------------------------------------------


async def test_a_signed_request_and_its_answer(captured_logs: Any) -> None:
    seen = Seen()
    async with tool_backend(SECRET) as (base, backend):
        out = await run(tools_config(base), "lookup_order", metrics=seen)
    assert (out.outcome, dict(out.output)) == ("ok", {"order_number": "42", "status": "shipped"})
    req = backend.requests[0]
    signing.verify(SECRET, req.body, req.headers)  # the backend checked it too (401 otherwise)
    assert req.headers["content-type"] == "application/json" and req.headers["webhook-id"].startswith("msg_")
    assert req.json["arguments"] == {"order_number": "42"} and req.json["call"]["call_sid"] == "CA1"
    assert [(t, o) for t, o, _ in seen.observed] == [("lookup_order", "ok")]
    done = captured_logs.events("tool.done")
    assert done[0]["tool"] == "lookup_order" and done[0]["outcome"] == "ok" and "duration_ms" in done[0]
    assert "order_number" not in captured_logs.text and "shipped" not in captured_logs.text  # no arguments, no answer
    assert base not in captured_logs.text and SECRET not in captured_logs.text


@pytest.mark.parametrize(("name", "outcome", "error"), [
    ("fail", "http_error", "the backend answered HTTP 500"),
    ("garbage", "bad_answer", "the backend's answer is not valid JSON"),
    ("closed", "unreachable", "connection refused or unreachable"),
    ("nope", "unknown_function", "unknown function 'nope'"),
])
async def test_every_failure_is_an_error_the_model_hears(name: str, outcome: str, error: str) -> None:
    async with tool_backend(SECRET) as (base, _):
        out = await run(tools_config(base), name, "{}")
    assert (out.outcome, dict(out.output)) == (outcome, {"error": error})
    assert "127.0.0.1" not in error


async def test_a_json_array_answer_is_wrapped() -> None:
    async with tool_backend(SECRET) as (base, _):
        out = await run(tools_config(base), "listing", "{}")
    assert dict(out.output) == {"result": [1, 2]}


async def test_bad_arguments_never_reach_the_backend() -> None:
    async with tool_backend(SECRET) as (base, backend):
        missing = await run(tools_config(base), "lookup_order", "{}")
        broken = await run(tools_config(base), "lookup_order", "{oops")
    assert missing.outcome == broken.outcome == "bad_arguments"
    assert "required" in missing.output["error"] and backend.requests == []


async def test_a_backend_that_never_answers_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async with tool_backend(SECRET) as (base, _):
        cfg = tools_config(base, timeout_s=2.0)
        t0 = trio.current_time()
        out = await run(cfg, "never", "{}")
        assert (out.outcome, dict(out.output)) == ("timeout", {"error": "no answer within 2 s"})
        assert 2.0 <= trio.current_time() - t0 < 2.5
        fast = await run(cfg, "never_fast", "{}")  # the function's own timeout_s wins
        assert dict(fast.output) == {"error": "no answer within 0.5 s"} and 0.5 <= fast.duration_s < 1


async def test_builtins_run_through_the_same_path() -> None:
    calls: list[Mapping[str, Any]] = []

    async def dtmf(call: CallInfo, args: Mapping[str, Any]) -> Mapping[str, Any]:
        calls.append(args)
        if args.get("digits") == "x":
            raise ex.ToolError("not a key")
        return {"sent": args["digits"]}

    spec = ToolSpec("send_dtmf", "", {"type": "object", "properties": {"digits": {"type": "string"}},
                                      "required": ["digits"]})
    b = {"send_dtmf": ex.Builtin(spec, dtmf)}
    cfg = tools_config("http://127.0.0.1:9")
    assert dict((await run(cfg, "send_dtmf", '{"digits": "12"}', builtins=b)).output) == {"sent": "12"}
    assert dict((await run(cfg, "send_dtmf", '{"digits": "x"}', builtins=b)).output) == {"error": "not a key"}
    assert (await run(cfg, "send_dtmf", "{}", builtins=b)).outcome == "bad_arguments"
    assert len(calls) == 2
