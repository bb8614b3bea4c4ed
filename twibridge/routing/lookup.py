"""The pre-call lookup: ``/voice`` asks the business who is calling before it answers.

``POST [routing] webhook`` with ``{"call": {"call_sid", "from", "to",
"params"}}``, signed like every request twibridge sends (Standard Webhooks,
:func:`twibridge.webhooks.client.post_signed`; the secret is ``[routing]
secret``, else ``[tools] secret``), bounded by ``[routing] timeout_s``
(1.5 s by default: Twilio waits 15 s for ``/voice``, the caller hears
ringing meanwhile).  The answer may be:

* ``{"agent": "sales", "variables": {"customer_name": "Ada"}}`` — either key alone too;
* ``{"reject": true, "say": "..."}`` — refuse the call politely;
* ``{}`` or an empty 2xx body — no opinion: the static routes decide.

A timeout, a refused connection, a non-2xx status or an answer that breaks
these rules (:func:`parse_answer` says which) is a warning, and the static
routes decide: a lookup that is down must never keep a call from being answered.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import httpx

from twibridge.config import Config
from twibridge.config.routing import DEFAULT_AGENT, VAR_RE
from twibridge.logs import get_logger
from twibridge.routing.rules import Answer, CallFacts
from twibridge.webhooks.client import DeliveryError, encode, post_signed

log = get_logger("twibridge.routing")

#: Bounds on an answer's variables (they travel as TwiML <Parameter>s).
MAX_VARIABLES, MAX_VALUE_CHARS, MAX_SAY_CHARS = 32, 500, 1000


class BadAnswer(Exception):
    """The lookup answered something twibridge cannot use; the message says what."""


def secret(cfg: Config) -> str:
    """The lookup's signing secret: ``[routing] secret``, else ``[tools] secret``."""
    own = cfg.routing.secret.get_secret_value()
    tools = getattr(getattr(cfg, "tools", None), "secret", None)
    return own or (tools.get_secret_value() if tools is not None else "")


def request_body(call: CallFacts) -> bytes:
    return encode({"call": {"call_sid": call.call_sid, "from": call.from_number, "to": call.to_number,
                            "params": dict(call.params)}})


def parse_answer(data: Any, cfg: Config) -> Answer:
    """The lookup's JSON answer, checked.

    Raises:
        BadAnswer: not an object, wrong types, an agent that is not
            configured, or variables beyond the bounds.
    """
    if data is None:
        return Answer()
    if not isinstance(data, dict):
        raise BadAnswer("the answer is not a JSON object")
    reject, say = data.get("reject", False), data.get("say", "")
    if not isinstance(reject, bool):
        raise BadAnswer("reject: expected true or false")
    if not isinstance(say, str) or len(say) > MAX_SAY_CHARS:
        raise BadAnswer(f"say: expected a string of at most {MAX_SAY_CHARS} characters")
    agent = data.get("agent")
    if agent is not None and (not isinstance(agent, str) or (agent != DEFAULT_AGENT and agent not in cfg.agents)):
        raise BadAnswer(f"agent: {str(agent)[:40]!r} is not a configured agent")
    raw = data.get("variables", {})
    if not isinstance(raw, dict) or len(raw) > MAX_VARIABLES:
        raise BadAnswer(f"variables: expected an object of at most {MAX_VARIABLES} entries")
    variables: dict[str, str] = {}
    for name, value in raw.items():
        if not VAR_RE.match(name) or name in ("from", "to", "call_sid"):
            raise BadAnswer(f"variables: {name[:40]!r} is not a variable name (letters, digits, '_')")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise BadAnswer(f"variables.{name}: expected a string or a number")
        text = str(value)
        if len(text) > MAX_VALUE_CHARS:
            raise BadAnswer(f"variables.{name}: longer than {MAX_VALUE_CHARS} characters")
        variables[name] = text
    return Answer(agent or None, variables, reject, say)


async def ask(cfg: Config, call: CallFacts, *, on_outcome: Callable[[str], None] | None = None,
              client: httpx.AsyncClient | None = None) -> Answer | None:
    """The lookup's answer, or None (not configured, or it failed: logged).

    ``on_outcome`` hears ``answered``, ``rejected`` or ``failed`` (the metric).
    """
    if not cfg.routing.webhook:
        return None
    try:
        async with httpx.AsyncClient() if client is None else contextlib.nullcontext(client) as http:
            reply = await post_signed(http, cfg.routing.webhook, request_body(call), secret=secret(cfg),
                                      timeout_s=cfg.routing.timeout_s)
        if not reply.ok:
            raise DeliveryError(f"status {reply.status}", reply.status)
        answer = parse_answer(reply.json() if reply.body.strip() else None, cfg)
    except (DeliveryError, BadAnswer, ValueError) as exc:
        log.warning("routing.lookup_failed", call_sid=call.call_sid, reason=str(exc),
                    action="the static routes decide")
        if on_outcome is not None:
            on_outcome("failed")
        return None
    log.info("routing.lookup_answered", call_sid=call.call_sid, agent=answer.agent, reject=answer.reject,
             variables=sorted(answer.variables))
    if on_outcome is not None:
        on_outcome("rejected" if answer.reject else "answered")
    return answer

