"""Routing: which agent answers a call, with what it knows of the caller.

* :mod:`twibridge.routing.rules` — the decision (sans-IO): lookup answer,
  then ``[[routes]]`` in file order, then ``[agent]``;
* :mod:`twibridge.routing.lookup` — the signed pre-call lookup ``/voice`` asks first;
* :mod:`twibridge.routing.percall` — the decision in ``<Parameter>``s, and
  the config one call runs on (its agent, templates rendered, its fallback).

Config models: :mod:`twibridge.config.routing`.  Docs: ``docs/routing.md``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable, Mapping

from twibridge.config import Config
from twibridge.routing.lookup import ask, secret
from twibridge.routing.percall import parameters, query_params
from twibridge.routing.rules import Answer, CallFacts, Decision, decide
from twibridge.webhooks.signing import secret_problem

__all__ = ["Answer", "CallFacts", "Decision", "decide", "facts_from_webhook", "parameters", "problems",
           "route_call"]


async def route_call(cfg: Config, call: CallFacts, active: Callable[[int], int],
                     on_lookup: Callable[[str], None] | None = None) -> Decision:
    """Ask the lookup (if configured, bounded), then decide: what ``/voice`` calls."""
    answer = await ask(cfg, call, on_outcome=on_lookup)
    return decide(cfg, call, datetime.now(timezone.utc), active=active, answer=answer)


def problems(cfg: Config) -> list[str]:
    """What the config validation cannot check itself (it sits below the webhooks wing)."""
    if not cfg.routing.webhook:
        return []
    key = secret(cfg)
    if not key:
        return ["routing.secret: required when routing.webhook is set (or [tools] secret): lookups are "
                "always signed; make one with: python -c 'from twibridge.webhooks.signing import new_secret; "
                "print(new_secret())'"]
    problem = secret_problem(key)
    return [f"routing.secret: {problem}"] if problem else []


def facts_from_webhook(form: Mapping[str, str], query: Mapping[str, str]) -> CallFacts:
    return CallFacts(form.get("CallSid", ""), form.get("From", ""), form.get("To", ""), query_params(query))
