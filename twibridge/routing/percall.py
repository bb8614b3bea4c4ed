"""The routing decision on its way from ``/voice`` to the stream, and the call's own config.

``/voice`` decides (:mod:`twibridge.routing.rules`) and puts the decision in
the TwiML's ``<Parameter>``s, beside CallSid/From/To and the stream token:
``twibridge_agent``, ``twibridge_route`` and one ``twibridge_var_<name>`` per
variable, plus the operator's own ``/voice?name=value`` parameters.  Twilio
hands them back in ``start.customParameters``, so whichever worker or
instance takes the stream serves the call as decided, with no shared state
(the stream token covers every parameter ``/voice`` emits).

At ``start`` the call reads them back (:func:`from_parameters`) and builds
its own config from the snapshot it started with (:func:`call_config`): the
named agent merged over ``[agent]`` with its templates rendered, and the
route's fallback.  Names starting ``twibridge_`` are internals: never shown
to the agent as params (:func:`public_params`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from twibridge.config import AgentConfig, Config, FallbackConfig
from twibridge.config.routing import DEFAULT_AGENT, PARAM_RE, VAR_RE, agent_templates, render
from twibridge.logs import get_logger
from twibridge.routing.rules import CallFacts, Decision

log = get_logger("twibridge.routing")

INTERNAL = "twibridge_"
PARAM_AGENT, PARAM_ROUTE, PARAM_VAR = "twibridge_agent", "twibridge_route", "twibridge_var_"
#: Parameters Twilio's form already carries (``/voice`` puts them in the TwiML itself).
TWILIO_PARAMS = frozenset({"CallSid", "From", "To"})
#: Operator parameters taken from the voice URL's query (more is not a routing key).
MAX_QUERY_PARAMS, MAX_QUERY_VALUE_CHARS = 16, 200


def query_params(query: Mapping[str, str]) -> dict[str, str]:
    """The operator's ``/voice?…`` parameters usable as routing keys (bounded; no internals)."""
    out: dict[str, str] = {}
    for name, value in query.items():
        if len(out) < MAX_QUERY_PARAMS and PARAM_RE.match(name) and not name.startswith(INTERNAL) \
                and name not in TWILIO_PARAMS:
            out[name] = str(value)[:MAX_QUERY_VALUE_CHARS]
    return out


def parameters(decision: Decision, call: CallFacts) -> dict[str, str]:
    """The ``<Parameter>``s that carry ``decision`` (and the operator's params) to the stream."""
    out = dict(call.params)
    if decision.agent != DEFAULT_AGENT:  # absent means [agent]: an unrouted call's TwiML stays as it was
        out[PARAM_AGENT] = decision.agent
    if decision.route is not None:
        out[PARAM_ROUTE] = str(decision.route)
    out.update({PARAM_VAR + name: value for name, value in decision.variables.items()})
    return out


def public_params(custom: Mapping[str, str]) -> dict[str, str]:
    """What the agent may see as params: everything but the ``twibridge_*`` internals."""
    return {k: v for k, v in custom.items() if not k.startswith(INTERNAL)}


@dataclass(frozen=True, slots=True)
class CallRouting:
    agent: str = DEFAULT_AGENT
    route: int | None = None
    variables: Mapping[str, str] = field(default_factory=dict)


def from_parameters(custom: Mapping[str, str], cfg: Config) -> CallRouting:
    """The decision back from ``start.customParameters``, against the call's config.

    An agent the config no longer has (reloaded since ``/voice``) falls back
    to ``[agent]`` with a warning; a stream with no decision (custom TwiML,
    an older ``/voice``) gets ``[agent]``.
    """
    agent = custom.get(PARAM_AGENT, DEFAULT_AGENT) or DEFAULT_AGENT
    if agent != DEFAULT_AGENT and agent not in cfg.agents:
        log.warning("routing.unknown_agent", agent=agent[:64], action=f"serving with [agent] ({DEFAULT_AGENT})")
        agent = DEFAULT_AGENT
    text = custom.get(PARAM_ROUTE, "")
    route = int(text) if text.isdigit() and int(text) < len(cfg.routes) else None
    if route is not None and cfg.routes[route].agent != agent:
        route = None  # the routes changed since /voice: that route is another now
    variables = {k[len(PARAM_VAR):]: v for k, v in custom.items()
                 if k.startswith(PARAM_VAR) and VAR_RE.match(k[len(PARAM_VAR):])}
    return CallRouting(agent, route, variables)


def template_values(cfg: Config, routing: CallRouting, call_sid: str, from_number: str, to_number: str,
                    params: Mapping[str, str]) -> dict[str, str]:
    """What ``{name}`` renders as for this call: built-ins, ``param.*``, then variables over their defaults."""
    values = {**cfg.routing.variables, **routing.variables}
    values.update({f"param.{k}": v for k, v in params.items()})
    values.update({"from": from_number, "to": to_number, "call_sid": call_sid})
    return values


def rendered_agent(agent: AgentConfig, values: Mapping[str, str]) -> AgentConfig:
    """``agent`` with its instructions and first messages rendered for one call."""
    data: dict[str, Any] = agent.model_dump()
    changed = False
    for where, text in agent_templates(data):
        out = render(text, values)
        if out != text:
            _put(data, where, out)
            changed = True
    return AgentConfig.model_validate(data) if changed else agent


def _put(data: Any, dotted: str, value: str) -> None:
    *path, last = dotted.split(".")
    for part in path:
        data = data[int(part)] if isinstance(data, list) else data[part]
    if isinstance(data, list):
        data[int(last)] = value
    else:
        data[last] = value


def call_config(cfg: Config, routing: CallRouting, values: Mapping[str, str]) -> Config:
    """The config one call runs on: its agent (rendered) as ``agent``, its route's fallback as
    ``fallback``, only its route's ``tools`` in ``tools.functions`` (the agent is offered, and the
    executor runs, nothing else)."""
    route = cfg.routes[routing.route] if routing.route is not None else None
    fallback = cfg.fallback
    if route is not None and (route.fallback_say is not None or route.fallback_dial is not None):
        fallback = FallbackConfig(say=fallback.say if route.fallback_say is None else route.fallback_say,
                                  dial=fallback.dial if route.fallback_dial is None else route.fallback_dial)
    agent = rendered_agent(cfg.agent_config(routing.agent), values)
    update: dict[str, Any] = {"agent": agent, "fallback": fallback}
    if (allowed := allowed_tools(cfg, routing)) is not None:
        functions = tuple(f for f in cfg.tools.functions if f.name in allowed)
        update["tools"] = cfg.tools.model_copy(update={"functions": functions})
    return cfg.model_copy(update=update)


def allowed_tools(cfg: Config, routing: CallRouting) -> tuple[str, ...] | None:
    """The route's ``tools`` subset, or None (every configured function)."""
    return cfg.routes[routing.route].tools if routing.route is not None else None


def prepare(cfg: Config, custom: Mapping[str, str], call_sid: str) -> tuple[Config, CallRouting, dict[str, str]]:
    """At ``start``: the call's config, its routing (variables over their defaults) and its public params."""
    routed = from_parameters(custom, cfg)
    params = public_params(custom)
    values = template_values(cfg, routed, call_sid, custom.get("From", ""), custom.get("To", ""), params)
    routed = CallRouting(routed.agent, routed.route, {**cfg.routing.variables, **routed.variables})
    return call_config(cfg, routed, values), routed, params
