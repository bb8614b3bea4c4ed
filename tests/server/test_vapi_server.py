"""POST /vapi/server: VAPI's Server URL answered by the tools executor, on the real server."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from fakes.tool_backend import tool_backend
from support import Leg, bridge, make_config, media_socket, wait_calls
from twibridge.server import vapi_server as vs
from twibridge.webhooks import signing

SECRET = signing.new_secret()
VAPI_SECRET = "vapi-server-secret-0123456789"


def tool_calls_message(call_sid: str = "", *calls: dict[str, Any]) -> dict[str, Any]:
    call = {"id": "vapi-call-1", "assistantOverrides": {"variableValues": {"twilioCallSid": call_sid}}}
    return {"message": {"type": "tool-calls", "call": call, "toolCallList": list(calls),
                        "toolWithToolCallList": []}}


def config(base: str) -> Any:
    fns = [{"name": "lookup_order", "url": f"{base}/lookup_order",
            "parameters": {"type": "object", "properties": {"order_number": {"type": "string"}},
                           "required": ["order_number"]}},
           {"name": "never", "url": f"{base}/never", "timeout_s": 0.5}]
    return make_config(agent={"vapi": {"server_secret": VAPI_SECRET}}, tools={"secret": SECRET, "functions": fns})


def test_parsing_vapi_shapes() -> None:
    flat = {"type": "tool-calls", "toolCallList": [
        {"id": "a", "name": "x", "parameters": {"n": 1}},
        {"id": "b", "type": "function", "function": {"name": "y", "arguments": '{"n": 2}'}},
        {"name": "no id"}, "junk"]}
    assert vs.parse_message(flat) == flat and vs.parse_message({"message": flat}) == flat
    assert vs.parse_message([1]) is None and vs.parse_message({"message": {}}) is None
    assert vs.tool_calls(flat) == [("a", "x", {"n": 1}), ("b", "y", '{"n": 2}')]
    wrapped = {"type": "tool-calls", "toolWithToolCallList": [{"toolCall": {"id": "c", "name": "z"}}]}
    assert vs.tool_calls(wrapped) == [("c", "z", {})]
    assert vs.call_sid_of(tool_calls_message("CA9")["message"]) == "CA9" and vs.call_sid_of({}) == ""
    assert vs.authorized("s3cret", {"X-Vapi-Secret": "s3cret"}) and vs.authorized("s3cret", {"Authorization": "Bearer s3cret"})
    assert not vs.authorized("s3cret", {"Authorization": "s3cre"}) and not vs.authorized("", {"X-Vapi-Secret": ""})


async def test_unauthenticated_is_401_and_a_warning(captured_logs: Any) -> None:
    async with tool_backend(SECRET) as (base, backend), bridge(config(base)) as (url, _):
        async with httpx.AsyncClient() as client:
            for headers in ({}, {"X-Vapi-Secret": "wrong"}, {"Authorization": "Bearer wrong"}):
                r = await client.post(url + "/vapi/server", json=tool_calls_message(), headers=headers)
                assert r.status_code == 401
    assert len(captured_logs.events("vapi.server_unauthorized")) == 3 and backend.requests == []
    assert VAPI_SECRET not in captured_logs.text


async def test_tool_calls_are_run_and_answered_as_vapi_requires(captured_logs: Any) -> None:
    message = tool_calls_message("", {"id": "t1", "name": "lookup_order", "parameters": {"order_number": "7"}},
                                 {"id": "t2", "name": "never", "parameters": {}},
                                 {"id": "t3", "name": "lookup_order", "parameters": {}})
    async with tool_backend(SECRET) as (base, _), bridge(config(base)) as (url, _):
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(url + "/vapi/server", json=message, headers={"X-Vapi-Secret": VAPI_SECRET})
            other = await client.post(url + "/vapi/server", json={"message": {"type": "status-update"}},
                                      headers={"Authorization": f"Bearer {VAPI_SECRET}"})
            bad = await client.post(url + "/vapi/server", content=b"{oops", headers={"X-Vapi-Secret": VAPI_SECRET})
    assert r.status_code == 200
    results = r.json()["results"]
    assert results[0] == {"toolCallId": "t1", "name": "lookup_order",
                          "result": '{"order_number":"7","status":"shipped"}'}
    assert results[1] == {"toolCallId": "t2", "name": "never", "error": "no answer within 0.5 s"}
    assert results[2]["toolCallId"] == "t3" and "required property" in results[2]["error"]
    assert all("\n" not in v for e in results for v in e.values())
    assert (other.status_code, other.json()) == (200, {})
    assert captured_logs.events("vapi.server_message")[0]["message_type"] == "status-update"
    assert bad.status_code == 400


async def test_a_live_call_lends_its_identity_and_gets_the_outcome(captured_logs: Any) -> None:
    with trio.fail_after(20):
        async with tool_backend(SECRET) as (base, backend), bridge(config(base)) as (url, rt):
            async with media_socket(url) as ws:
                leg = Leg(ws)
                await leg.start()
                await wait_calls(rt, 1)
                message = tool_calls_message(leg.call_sid, {"id": "t1", "name": "lookup_order",
                                                            "parameters": {"order_number": "7"}})
                async with httpx.AsyncClient(timeout=10) as client:
                    r = await client.post(url + "/vapi/server", json=message, headers={"X-Vapi-Secret": VAPI_SECRET})
                assert "result" in r.json()["results"][0]
                await leg.stop()
                await wait_calls(rt, 0)
    call = json.loads(backend.requests[0].body)["call"]
    assert (call["call_sid"], call["stream_sid"]) == (leg.call_sid, leg.stream_sid)
    (ended,) = captured_logs.events("call.ended")
    assert [t["name"] for t in ended["tools"]] == ["lookup_order"]
