"""Which agent answers a call: the lookup's answer, else the first matching ``[[routes]]``, else ``[agent]``.

Sans-IO: :func:`decide` is a function of the config, the call's facts, the
time and the calls live per route, so ``twibridge routes``, ``/voice`` and
the tests all run the same rules.  The :class:`Decision` says *why* (and why
each earlier route did not match) for the operator.

Rules, in order:

1. the lookup refused the call (``{"reject": true}``): the caller hears its
   ``say`` (or ``[fallback] say``), then the call ends;
2. the lookup named an agent: that agent, with its variables (no route);
3. the first route, in file order, whose keys all match (``to``,
   ``from_prefix``, every ``param.<name>``, ``hours`` read in its
   ``timezone``): its agent.  A route that is full (``max_calls`` live on it
   in this process) answers with its fallback (``fallback_say`` /
   ``fallback_dial``, else ``[fallback]``), as a full server does;
4. no route matched: ``[agent]`` (named ``default``).

Variables the lookup gave without naming an agent stay with the call
whichever route decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Mapping

from twibridge.config import Config, Route
from twibridge.config.routing import DEFAULT_AGENT, in_hours


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What ``/voice`` knows of a call before answering it."""

    call_sid: str
    from_number: str
    to_number: str
    #: The operator's own parameters: the query string of the number's voice URL (``/voice?line=sales``).
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Answer:
    """A usable lookup answer (see :mod:`twibridge.routing.lookup`)."""

    agent: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)
    reject: bool = False
    say: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    agent: str
    #: Index into ``routes`` of the route that decided, or None.
    route: int | None
    why: str
    variables: Mapping[str, str] = field(default_factory=dict)
    #: True: do not connect; the caller hears ``say`` (then ``dial`` when set, else hang-up).
    refuse: bool = False
    say: str = ""
    dial: str = ""
    #: Why each route before the deciding one did not match (``twibridge routes`` prints it).
    skipped: tuple[str, ...] = ()


def mismatch(route: Route, call: CallFacts, now: datetime) -> str | None:
    """Why ``route`` does not match ``call`` at ``now``, or None when it does."""
    if route.to and call.to_number != route.to:
        return f"to is {call.to_number or '(none)'}, not {route.to}"
    if route.from_prefix and not call.from_number.startswith(route.from_prefix):
        return f"from {call.from_number or '(none)'} does not start with {route.from_prefix}"
    for name, value in route.param.items():
        if call.params.get(name) != value:
            return f"param.{name} is {call.params.get(name, '(absent)')!r}, not {value!r}"
    if route.hours and not in_hours(route.windows, route.timezone, now):
        return f"outside hours ({route.hours}, {route.timezone})"
    return None


def decide(cfg: Config, call: CallFacts, now: datetime, *, active: Callable[[int], int] = lambda i: 0,
           answer: Answer | None = None) -> Decision:
    """The agent for ``call`` at the aware datetime ``now``.

    ``active(i)``: calls live on route ``i`` (for its ``max_calls``).
    ``answer``: the lookup's answer, when it gave a usable one.
    """
    variables = dict(answer.variables) if answer is not None else {}
    if answer is not None and answer.reject:
        return Decision(DEFAULT_AGENT, None, "the lookup refused the call", variables, refuse=True,
                        say=answer.say or cfg.fallback.say)
    if answer is not None and answer.agent:
        return Decision(answer.agent, None, f"the lookup chose {answer.agent!r}", variables)
    skipped: list[str] = []
    for i, route in enumerate(cfg.routes):
        why_not = mismatch(route, call, now)
        if why_not is not None:
            skipped.append(f"routes.{i}: {why_not}")
            continue
        matched = f"routes.{i} matched ({route.describe()})"
        if route.max_calls is not None and active(i) >= route.max_calls:
            say = cfg.fallback.say if route.fallback_say is None else route.fallback_say
            dial = cfg.fallback.dial if route.fallback_dial is None else route.fallback_dial
            return Decision(route.agent, i, f"{matched}, but it is full ({route.max_calls} calls)", variables,
                            refuse=True, say=say, dial=dial, skipped=tuple(skipped))
        return Decision(route.agent, i, matched, variables, skipped=tuple(skipped))
    return Decision(DEFAULT_AGENT, None, "no route matched: [agent]" if cfg.routes else "no routes: [agent]",
                    variables, skipped=tuple(skipped))
