"""One tool call: the model's arguments in, the output the model hears out.

The contract (issue #17): a configured function is a signed ``POST`` of
``{"name", "arguments", "tool_call_id", "call": {...}}`` to its ``url``; a
2xx answer's JSON is the output.  *Everything else* — arguments that are not
a JSON object or break the schema, an unknown function, a non-2xx answer,
invalid JSON, a timeout, a refused connection — becomes ``{"error": "<short
reason>"}`` (never the URL or the secret), so the model can say something:
no dead air, no hung turn.  :func:`execute` never raises for the far end's
faults; only cancellation (the call ended) gets through.

The validation is sans-IO (:func:`check_arguments`); the I/O is
:func:`twibridge.webhooks.client.post_signed`.  Bridge built-ins (a mapping
name → async handler, e.g. a later ``send_dtmf``) run in-process through the
same path, so they are logged, measured and bounded alike.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Collection, Mapping, Protocol

import httpx
import trio
from jsonschema import ValidationError
from jsonschema.validators import validator_for

from twibridge.tools.spec import CallIdentity, ToolSpec
from twibridge.config import ToolFunctionConfig, ToolsConfig
from twibridge.logs import get_logger
from twibridge.webhooks.client import DeliveryError, encode, post_signed

log = get_logger("twibridge.tools")

#: An error reason the model hears is at most this long.
MAX_REASON = 200

#: ``outcome`` label values (logs, the metric, the simulate-call report).
OK, ERROR_STATUS, BAD_ANSWER, TIMEOUT, UNREACHABLE = "ok", "http_error", "bad_answer", "timeout", "unreachable"
BAD_ARGUMENTS, UNKNOWN, FAILED, BUSY, CANCELLED = "bad_arguments", "unknown_function", "failed", "busy", "cancelled"


class ToolMetrics(Protocol):
    """Where durations go (``twibridge_tool_duration_seconds{tool,outcome}``)."""

    def observe_tool(self, tool: str, outcome: str, seconds: float) -> None: ...


#: A bridge built-in: arguments in, output out (raise :class:`ToolError` to answer an error).
BuiltinHandler = Callable[[CallIdentity, Mapping[str, Any]], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class Builtin:
    spec: ToolSpec
    handler: BuiltinHandler


class ToolError(Exception):
    """A built-in's way of answering ``{"error": reason}``."""


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    name: str
    call_id: str
    output: Mapping[str, Any]
    outcome: str
    duration_s: float
    started_at: float  # trio.current_time() when it started


def specs(config: ToolsConfig, builtins: Mapping[str, Builtin] = {}) -> tuple[ToolSpec, ...]:
    """What a call's agent may call: the configured functions, then the bridge's built-ins."""
    return (*(ToolSpec(f.name, f.description, f.parameters) for f in config.functions),
            *(b.spec for b in builtins.values()))


def check_arguments(schema: Mapping[str, Any], raw: str | Mapping[str, Any]) -> dict[str, Any]:
    """The arguments as an object valid against ``schema``.

    Raises:
        ToolError: not JSON, not an object, or against the schema (e.g. a
            missing required key), with a reason the model can act on.
    """
    if isinstance(raw, str):
        try:
            args: Any = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise ToolError("the arguments are not valid JSON") from None
    else:
        args = dict(raw)
    if not isinstance(args, dict):
        raise ToolError("the arguments must be a JSON object")
    try:
        validator_for(schema)(schema).validate(args)
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path)
        raise ToolError(f"invalid arguments{' at ' + where if where else ''}: {exc.message}"[:MAX_REASON]) from None
    return args


def request_body(fn: str, call_id: str, args: Mapping[str, Any], call: CallIdentity) -> bytes:
    """The exact bytes signed and sent (``params`` never hold the stream token: the runner drops it)."""
    return encode({"name": fn, "arguments": dict(args), "tool_call_id": call_id,
                   "call": {"call_sid": call.call_sid, "stream_sid": call.stream_sid, "from": call.from_number,
                            "to": call.to_number, "params": dict(call.params)}})


def answer_output(status: int, body: bytes) -> tuple[Mapping[str, Any], str]:
    """A backend's answer → (output for the model, outcome)."""
    if not 200 <= status < 300:
        return {"error": f"the backend answered HTTP {status}"}, ERROR_STATUS
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {"error": "the backend's answer is not valid JSON"}, BAD_ANSWER
    return (value if isinstance(value, dict) else {"result": value}), OK


class Executor:
    """Runs tool calls for any provider (one per process or per call; it holds no connection).

    ``client`` is asked for lazily (:meth:`run` creates nothing until a
    configured function is actually called).
    """

    def __init__(self, config: ToolsConfig, client: Callable[[], httpx.AsyncClient], *,
                 builtins: Mapping[str, Builtin] = {}, metrics: ToolMetrics | None = None) -> None:
        self.config = config
        self._client = client
        self.builtins = dict(builtins)
        self.metrics = metrics

    async def run(self, call: CallIdentity, call_id: str, name: str, arguments: str | Mapping[str, Any], *,
                  allowed: Collection[str] | None = None) -> ToolOutcome:
        """Run one tool call to an outcome (cancellation aside, it never raises).

        ``allowed``: the names this call may run (its ``CallInfo.tools``); any other is
        an unknown function, configured or not.  None: every configured one.
        """
        started = trio.current_time()
        outcome = FAILED
        output: Mapping[str, Any] = {"error": "the tool did not finish"}
        try:
            if allowed is not None and name not in allowed:
                output, outcome = {"error": f"unknown function {name[:64]!r}"}, UNKNOWN
            else:
                output, outcome = await self._run(call, call_id, name, arguments)
        except trio.Cancelled:
            outcome = CANCELLED
            raise
        finally:
            duration = trio.current_time() - started
            self._record(name, call_id, outcome, duration, output)
        return ToolOutcome(name, call_id, output, outcome, duration, started)

    async def _run(self, call: CallIdentity, call_id: str, name: str,
                   arguments: str | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
        builtin = self.builtins.get(name)
        fn = self.config.function(name) if builtin is None else None
        if builtin is None and fn is None:
            return {"error": f"unknown function {name[:64]!r}"}, UNKNOWN
        schema = builtin.spec.parameters if builtin is not None else fn.parameters  # type: ignore[union-attr]
        try:
            args = check_arguments(schema, arguments)
        except ToolError as exc:
            return {"error": str(exc)}, BAD_ARGUMENTS
        if builtin is not None:
            return await self._builtin(builtin, call, args)
        assert fn is not None
        return await self._post(fn, call, call_id, args)

    async def _builtin(self, builtin: Builtin, call: CallIdentity, args: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
        with trio.move_on_after(self.config.timeout_s) as scope:
            try:
                return await builtin.handler(call, args), OK
            except ToolError as exc:
                return {"error": str(exc)[:MAX_REASON]}, FAILED
        assert scope.cancelled_caught
        return {"error": f"no result within {self.config.timeout_s:g} s"}, TIMEOUT

    async def _post(self, fn: ToolFunctionConfig, call: CallIdentity, call_id: str,
                    args: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
        timeout = fn.timeout_s if fn.timeout_s is not None else self.config.timeout_s
        body = request_body(fn.name, call_id, args, call)
        try:
            reply = await post_signed(self._client(), fn.url, body, secret=self.config.secret.get_secret_value(),
                                      timeout_s=timeout, clock=time.time)
        except DeliveryError as exc:
            return {"error": exc.reason}, TIMEOUT if exc.reason.startswith("no answer") else (
                BAD_ANSWER if exc.status is not None else UNREACHABLE)
        return answer_output(reply.status, reply.body)

    def _record(self, name: str, call_id: str, outcome: str, duration: float, output: Mapping[str, Any]) -> None:
        fields: dict[str, Any] = {"tool": name[:64], "tool_call_id": call_id[:64], "outcome": outcome,
                                  "duration_ms": round(duration * 1000, 1)}
        if outcome not in (OK, CANCELLED):
            fields["error"] = str(output.get("error", ""))[:MAX_REASON]
        (log.info if outcome in (OK, CANCELLED) else log.warning)("tool.done", **fields)
        if self.metrics is not None:
            # Unknown names are the model's invention: one label value for all of them.
            self.metrics.observe_tool(name if outcome != UNKNOWN else "(unknown)", outcome, duration)
