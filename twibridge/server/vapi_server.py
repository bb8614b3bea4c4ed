"""``POST /vapi/server``: a VAPI Server URL that runs the configured functions.

Point a VAPI assistant's tools (or its ``server.url``) at
``https://<public_url>/vapi/server`` and its ``tool-calls`` messages are run
by the same executor every provider uses (:mod:`twibridge.tools.executor`:
signed, bounded, every failure an error the model can speak), answered the
way VAPI requires: HTTP 200 with ``{"results": [{"toolCallId", "name",
"result" | "error"}]}``, ``result``/``error`` single-line strings.  Other
message types are acknowledged (200 ``{}``) and logged.

Authentication: ``[agent.vapi] server_secret``, sent by VAPI as
``X-Vapi-Secret`` (a legacy inline ``server.secret``) or ``Authorization:
Bearer`` (a Bearer credential); anything else is 401 and a warning.  With no
secret configured every request is refused.

Which call: VAPI's ``call`` object carries the ``assistantOverrides`` the
``vapi`` provider set, whose ``variableValues.twilioCallSid`` names the
live twibridge call; its identity goes into the backend's request and the
outcome into that call's summary.  A VAPI call not bridged here is served
with what VAPI says (no CallSid).
"""

from __future__ import annotations

import hmac
import json
from contextlib import AsyncExitStack
from typing import Any, Mapping

import httpx
import trio
from quart import Response, request
from quart_trio import QuartTrio

from twibridge.agents.base import CallInfo
from twibridge.logs import get_logger
from twibridge.runtime import Runtime
from twibridge.tools.executor import OK, Executor, ToolOutcome

log = get_logger("twibridge.server.vapi")

#: Tool calls answered from one message; more are refused with an error each.
MAX_TOOL_CALLS = 16
MAX_BODY_BYTES = 1024 * 1024


def authorized(secret: str, headers: Any) -> bool:
    """``X-Vapi-Secret: <secret>`` or ``Authorization: Bearer <secret>``, compared in constant time."""
    if not secret:
        return False
    given = [headers.get("X-Vapi-Secret", ""), headers.get("Authorization", "").removeprefix("Bearer ")]
    return any(g and hmac.compare_digest(g.encode(), secret.encode()) for g in given)


def parse_message(body: Any) -> dict[str, Any] | None:
    """The server message (``{"message": {...}}`` or flat), or None when it is not one."""
    if not isinstance(body, dict):
        return None
    inner = body.get("message")
    msg: dict[str, Any] = inner if isinstance(inner, dict) else body
    return msg if isinstance(msg.get("type"), str) else None


def tool_calls(msg: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """``(id, name, arguments)`` per call, from ``toolCallList`` or ``toolWithToolCallList``;
    arguments as VAPI gave them (object or JSON text: the executor checks them)."""
    items = msg.get("toolCallList")
    if not isinstance(items, list):
        wrapped = msg.get("toolWithToolCallList")
        items = [w.get("toolCall") for w in wrapped if isinstance(w, dict)] if isinstance(wrapped, list) else []
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        fn = item["function"] if isinstance(item.get("function"), dict) else {}
        name, call_id = item.get("name") or fn.get("name"), item.get("id")
        args = item.get("parameters") if "parameters" in item else item.get("arguments", fn.get("arguments", {}))
        if isinstance(name, str) and isinstance(call_id, str):
            out.append((call_id, name, args if isinstance(args, (str, dict)) else json.dumps(args)))
    return out


def call_sid_of(msg: Mapping[str, Any]) -> str:
    node: Any = msg
    for key in ("call", "assistantOverrides", "variableValues", "twilioCallSid"):
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, str) else ""


def result_entry(out: ToolOutcome) -> dict[str, str]:
    """VAPI's ``ToolCallResult``: ``result`` or ``error``, each one line of text."""
    entry = {"toolCallId": out.call_id, "name": out.name}
    if out.outcome == OK:
        entry["result"] = json.dumps(dict(out.output), ensure_ascii=False, separators=(",", ":"))
    else:
        entry["error"] = " ".join(str(out.output.get("error", "failed")).split())
    return entry


def register(app: QuartTrio, rt: Runtime) -> None:
    """Add ``POST /vapi/server`` to ``app``."""

    @app.post("/vapi/server")
    async def vapi_server() -> Any:
        remote = str(request.remote_addr or "")
        if not authorized(rt.config.agent.vapi.server_secret.get_secret_value(), request.headers):
            log.warning("vapi.server_unauthorized", remote=remote)
            return Response('{"error":"unauthorized"}', status=401, content_type="application/json")
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return Response('{"error":"too large"}', status=413, content_type="application/json")
        try:
            msg = parse_message(json.loads(await request.get_data()))
        except (ValueError, UnicodeDecodeError):
            msg = None
        if msg is None:
            log.warning("vapi.server_bad_message", remote=remote)
            return Response('{"error":"expected a VAPI server message"}', status=400, content_type="application/json")
        if msg["type"] != "tool-calls":
            log.info("vapi.server_message", message_type=msg["type"][:64])
            return {}
        return {"results": await _run(rt, msg)}


async def _run(rt: Runtime, msg: Mapping[str, Any]) -> list[dict[str, str]]:
    calls = tool_calls(msg)
    sid = call_sid_of(msg)
    live = rt.calls.get(sid) if sid else None
    info: CallInfo | None = getattr(live, "info", None)
    allowed = None if info is None else {t.name for t in info.tools}  # a live call: what it offers
    info = info or CallInfo(call_sid=sid, stream_sid="")
    outcomes: dict[int, ToolOutcome] = {}
    tools = getattr(live, "tools", None)
    async with AsyncExitStack() as stack:
        # A live call's own executor (its config: its route's functions; its built-ins; its client);
        # else one for this request, with a client of its own.
        if tools is not None:
            executor: Executor = tools.executor
        else:
            client = await stack.enter_async_context(httpx.AsyncClient(timeout=None, follow_redirects=False))
            executor = Executor(rt.config.tools, lambda: client, metrics=rt.metrics)

        async def one(i: int, call_id: str, name: str, args: Any) -> None:
            outcomes[i] = await executor.run(info, call_id, name, args, allowed=allowed)

        async with trio.open_nursery() as nursery:
            for i, (call_id, name, args) in enumerate(calls[:MAX_TOOL_CALLS]):
                nursery.start_soon(one, i, call_id, name, args)
    if tools is not None:  # the call's summary and report list them
        for i in sorted(outcomes):
            tools.finished(outcomes[i])
    results = [result_entry(outcomes[i]) for i in sorted(outcomes)]
    results += [{"toolCallId": c, "name": n, "error": "too many tool calls in one message"}
                for c, n, _ in calls[MAX_TOOL_CALLS:]]
    log.info("vapi.tool_calls", call_sid=sid, tools=len(calls), live_call=live is not None)
    return results
