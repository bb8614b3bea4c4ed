"""Config for routing: named agents, ``[[routes]]``, ``[routing]`` (the pre-call lookup).

* ``[agents.NAME]`` takes the keys of ``[agent]`` and its sub-tables; what it
  leaves out it takes from ``[agent]`` (:func:`merge_agents` folds them
  before validation, so each named agent is a whole :class:`AgentConfig` and
  its errors name ``agents.NAME.key``).  One level is merged: a sub-table's
  keys, never inside a value (an inline VAPI ``assistant`` is replaced whole).
* ``[[routes]]``: first match wins, in file order; every key a route gives
  must match (``to``, ``from_prefix``, ``param.<name>``, ``hours``).
* Templates (``{from}``, ``{to}``, ``{call_sid}``, ``{param.NAME}``,
  ``{NAME}``, ``{NAME?}``) are parsed here so a bad one is an error at load,
  naming the key, never a surprise at call time.  ``{NAME}`` must be declared
  in ``[routing.variables]`` (with the value it takes when the lookup gives
  none); ``{NAME?}`` renders empty when absent.

Pure: the hours and template functions take their inputs as arguments.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator, Mapping

from pydantic import Field, SecretStr, field_validator, model_validator

from twibridge.config.sections import _Section

#: The name ``[agent]`` goes by in routes, lookup answers, logs and metrics.
DEFAULT_AGENT = "default"
AGENT_SUBTABLES = ("echo", "vapi", "openai", "websocket")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PARAM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
E164_RE = re.compile(r"^\+[1-9][0-9]{1,14}$")
PREFIX_RE = re.compile(r"^\+[0-9]{1,14}$")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
BUILTIN_FIELDS = ("from", "to", "call_sid")


# ------------------------------------------------------------------ templates

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_FIELD = re.compile(r"^(from|to|call_sid|param\.[A-Za-z0-9_-]{1,64}|[A-Za-z_][A-Za-z0-9_]{0,63})(\?)?$")


def template_parts(text: str) -> Iterator[tuple[str, str | None, bool]]:
    """``(literal, name or None, optional)`` pieces of ``text``.

    Raises:
        ValueError: a stray ``{`` or ``}``, or a name that is no template name.
    """
    pos = 0
    for m in _TOKEN.finditer(text):
        literal = text[pos:m.start()]
        token = m.group(0)
        pos = m.end()
        if token in ("{{", "}}"):
            yield literal + token[0], None, False
        elif m.group(1) is not None:
            field = _FIELD.match(m.group(1).strip())
            if field is None:
                raise ValueError(f"{{{m.group(1)}}} is not a template name (write {{{{ and }}}} for literal braces)")
            yield literal, field.group(1), field.group(2) == "?"
        else:
            raise ValueError(f"a stray {token!r} (write {token * 2} for a literal brace)")
    yield text[pos:], None, False


def template_problem(text: str, declared: Mapping[str, str]) -> str | None:
    """Why ``text`` cannot be rendered for every call, or None."""
    try:
        for _, name, optional in template_parts(text):
            if name and not optional and name not in BUILTIN_FIELDS and not name.startswith("param.") \
                    and name not in declared:
                return (f"unknown template name {{{name}}}: declare it in [routing.variables] "
                        f"(with its default), or write {{{name}?}}")
    except ValueError as exc:
        return str(exc)
    return None


def render(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each ``{name}`` replaced from ``values`` (absent: empty)."""
    return "".join(literal + (values.get(name, "") if name else "") for literal, name, _ in template_parts(text))


def agent_templates(agent: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``(dotted key, text)`` of every templated string of one agent's config:
    OpenAI ``instructions``, an inline VAPI assistant's ``firstMessage`` and
    its ``model.messages[].content``."""
    openai = agent.get("openai") or {}
    if isinstance(openai, Mapping) and isinstance(openai.get("instructions"), str):
        yield "openai.instructions", openai["instructions"]
    assistant = (agent.get("vapi") or {}).get("assistant") if isinstance(agent.get("vapi"), Mapping) else None
    if isinstance(assistant, Mapping):
        if isinstance(assistant.get("firstMessage"), str):
            yield "vapi.assistant.firstMessage", assistant["firstMessage"]
        model = assistant.get("model")
        messages = model.get("messages") if isinstance(model, Mapping) else None
        for i, msg in enumerate(messages if isinstance(messages, list) else []):
            if isinstance(msg, Mapping) and isinstance(msg.get("content"), str):
                yield f"vapi.assistant.model.messages.{i}.content", msg["content"]


# ---------------------------------------------------------------------- hours


@dataclass(frozen=True, slots=True)
class Window:
    """Days (0 = Monday) and minutes of the day, ``start <= t < end``."""

    days: frozenset[int]
    start: int
    end: int


def _day_set(text: str) -> frozenset[int]:
    first, sep, last = text.partition("-")
    if first not in DAYS or (sep and last not in DAYS):
        raise ValueError(f"unknown day {text!r} (mon tue wed thu fri sat sun, or a range like mon-fri)")
    a = DAYS.index(first)
    b = DAYS.index(last) if sep else a
    return frozenset((a + i) % 7 for i in range((b - a) % 7 + 1))


def _minutes(text: str) -> int:
    m = re.fullmatch(r"([0-9]{2}):([0-9]{2})", text)
    if m is None or int(m.group(1)) > 24 or int(m.group(2)) > 59 or (int(m.group(1)) == 24 and m.group(2) != "00"):
        raise ValueError(f"bad time {text!r} (HH:MM, 00:00 to 24:00)")
    return int(m.group(1)) * 60 + int(m.group(2))


def parse_hours(text: str) -> tuple[Window, ...]:
    """``"mon-fri 09:00-17:30, sat 10:00-14:00"`` → windows.

    Raises:
        ValueError: says what is wrong (an end before its start included: an
            overnight window is two, ``mon-fri 22:00-24:00, tue-sat 00:00-06:00``).
    """
    windows = []
    for part in text.split(","):
        words = part.split()
        if len(words) != 2 or "-" not in words[1]:
            raise ValueError(f"expected 'DAYS HH:MM-HH:MM' (e.g. 'mon-fri 09:00-17:30'), got {part.strip()!r}")
        start_text, _, end_text = words[1].partition("-")
        start, end = _minutes(start_text), _minutes(end_text)
        if end <= start:
            raise ValueError(f"the end must be after the start in {words[1]} (split an overnight window in two)")
        windows.append(Window(_day_set(words[0].lower()), start, end))
    return tuple(windows)


def in_hours(windows: tuple[Window, ...], tz: str, now: datetime) -> bool:
    """Is the aware datetime ``now`` inside ``windows``, read in zone ``tz``?"""
    local = now.astimezone(zoneinfo.ZoneInfo(tz))
    minute = local.hour * 60 + local.minute
    return any(local.weekday() in w.days and w.start <= minute < w.end for w in windows)


# --------------------------------------------------------------------- models


class Route(_Section):
    to: str = ""
    from_prefix: str = ""
    param: dict[str, str] = Field(default_factory=dict)
    agent: str = DEFAULT_AGENT
    fallback_say: str | None = None
    fallback_dial: str | None = None
    max_calls: int | None = Field(None, ge=1, le=100_000)
    tools: tuple[str, ...] | None = None
    hours: str = ""
    timezone: str = "UTC"

    @field_validator("to", "fallback_dial")
    @classmethod
    def _e164(cls, v: str | None) -> str | None:
        if v and not E164_RE.match(v):
            raise ValueError(f"expected an E.164 number like +15551230001, got {v!r}")
        return v

    @field_validator("from_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v and not PREFIX_RE.match(v):
            raise ValueError(f"expected '+' and digits, like +44, got {v!r}")
        return v

    @field_validator("param")
    @classmethod
    def _param_names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not PARAM_RE.match(k)]
        if bad:
            raise ValueError(f"parameter names are letters, digits, '_' and '-', got {bad[0]!r}")
        return v

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: str) -> str:
        if v:
            parse_hours(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name like Europe/Berlin)") from None
        return v

    @model_validator(mode="after")
    def _has_a_key(self) -> Route:
        if not (self.to or self.from_prefix or self.param or self.hours):
            raise ValueError("a route needs to, from_prefix, param.<name> or hours (no match keys: use [agent])")
        return self

    @property
    def windows(self) -> tuple[Window, ...]:
        return parse_hours(self.hours) if self.hours else ()

    def match_key(self) -> tuple[Any, ...]:
        """Two routes with the same key: the second can never match."""
        return (self.to, self.from_prefix, tuple(sorted(self.param.items())), self.hours, self.timezone)

    def describe(self) -> str:
        """The route's match keys as the operator wrote them."""
        keys = [f"to = {self.to}"] if self.to else []
        keys += [f"from_prefix = {self.from_prefix}"] if self.from_prefix else []
        keys += [f"param.{k} = {v}" for k, v in self.param.items()]
        keys += [f"hours = {self.hours} {self.timezone}"] if self.hours else []
        return ", ".join(keys)


class RoutingConfig(_Section):
    webhook: str = ""
    timeout_s: float = Field(1.5, gt=0, le=10)
    secret: SecretStr = SecretStr("")
    #: Lookup variables templates may name as ``{NAME}``, each with its value when the lookup gives none.
    variables: dict[str, str] = Field(default_factory=dict)

    @field_validator("webhook")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not (v.startswith("https://") or v.startswith("http://")):
            raise ValueError(f"expected an http(s):// URL, got {v!r}")
        return v

    @field_validator("variables")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not VAR_RE.match(k) or k in BUILTIN_FIELDS]
        if bad:
            raise ValueError(f"variable names are letters, digits and '_' (not from/to/call_sid), got {bad[0]!r}")
        return v


# ------------------------------------------------------------------ checking


def merge_agents(data: Any) -> Any:
    """Fold ``[agent]`` under each raw ``[agents.NAME]`` (before validation)."""
    if not isinstance(data, dict) or not isinstance(data.get("agents"), dict):
        return data
    base = data.get("agent") or {}
    if not isinstance(base, dict):
        return data  # [agent]'s own error says what is wrong
    merged: dict[str, Any] = {}
    for name, override in data["agents"].items():
        if not isinstance(override, dict):
            merged[name] = override
            continue
        agent = {**base, **override}
        for sub in AGENT_SUBTABLES:
            if isinstance(base.get(sub), dict) and isinstance(override.get(sub), dict):
                agent[sub] = {**base[sub], **override[sub]}
        merged[name] = agent
    return {**data, "agents": merged}


def problems(agent: Any, agents: Mapping[str, Any], routes: tuple[Route, ...], routing: RoutingConfig,
             tool_names: set[str] | None) -> list[str]:
    """Cross-table problems, one line each naming the key."""
    found = []
    for name in agents:
        if name == DEFAULT_AGENT or not NAME_RE.match(name):
            found.append(f"agents.{name}: not a usable agent name ('{DEFAULT_AGENT}' is [agent]; "
                         "letters, digits, '_' and '-')")
    for key, a in [("agent", agent), *((f"agents.{n}", a) for n, a in agents.items())]:
        for where, text in agent_templates(a.model_dump()):
            problem = template_problem(text, routing.variables)
            if problem:
                found.append(f"{key}.{where}: {problem}")
    seen: dict[tuple[Any, ...], int] = {}
    for i, route in enumerate(routes):
        if route.agent != DEFAULT_AGENT and route.agent not in agents:
            found.append(f"routes.{i}.agent: no agent {route.agent!r} (define [agents.{route.agent}], "
                         f"or '{DEFAULT_AGENT}' for [agent])")
        first = seen.setdefault(route.match_key(), i)
        if first != i:
            found.append(f"routes.{i}: the same match as routes.{first} ({route.describe()}): it would never match")
        if route.tools is not None and tool_names is not None:
            for tool in route.tools:
                if tool not in tool_names:
                    found.append(f"routes.{i}.tools: no function {tool!r} in [[tools.functions]]")
    return found
