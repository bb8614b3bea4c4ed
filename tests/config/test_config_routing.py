"""Config of routing: named agents merged over [agent], routes, templates, hours (pure)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from twibridge.webhooks import signing
from twibridge.config import ConfigError, build_config, load_config
from twibridge.config.routing import in_hours, parse_hours, render, template_problem

KEY = "sk-test-0123456789"


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        build_config(data)
    return exc.value.problems


def test_a_named_agent_takes_what_it_leaves_out_from_agent() -> None:
    cfg = build_config({
        "agent": {"provider": "openai", "connect_timeout_s": 4, "openai": {"api_key": KEY, "voice": "cedar"}},
        "agents": {"sales": {"openai": {"instructions": "Sales for {from}."}},
                   "echoer": {"provider": "echo"}},
    })
    sales = cfg.agent_config("sales")
    assert (sales.provider, sales.connect_timeout_s, sales.openai.voice) == ("openai", 4, "cedar")
    assert sales.openai.api_key.get_secret_value() == KEY  # keys live once, in [agent]
    assert sales.openai.instructions == "Sales for {from}."
    assert cfg.agent_config("echoer").provider == "echo"
    assert cfg.agent_config("default") is cfg.agent
    assert KEY in cfg.secrets()


def test_a_named_agent_s_own_secret_is_a_secret(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[agents.sales]\nprovider = "openai"\n[agents.sales.openai]\napi_key = "sk-sales-secret-42"\n')
    cfg = load_config(f, environ={})
    assert "sk-sales-secret-42" in cfg.secrets()
    assert "sk-sales-secret-42" not in repr(cfg)


@pytest.mark.parametrize(("data", "line"), [
    ({"agents": {"sales": {"provider": "openai"}}},
     "agents.sales.openai.api_key: required when agents.sales.provider = 'openai'"),
    ({"agents": {"sales": {"voice": "x"}}}, "agents.sales.voice: unknown key"),
    ({"agents": {"default": {}}}, "agents.default: not a usable agent name ('default' is [agent]; "
                                  "letters, digits, '_' and '-')"),
    ({"routes": [{"to": "+15551230001", "agent": "nobody"}]},
     "routes.0.agent: no agent 'nobody' (define [agents.nobody], or 'default' for [agent])"),
    ({"routes": [{"to": "5551230001"}]}, "routes.0.to: expected an E.164 number like +15551230001, got '5551230001'"),
    ({"routes": [{"from_prefix": "44"}]}, "routes.0.from_prefix: expected '+' and digits, like +44, got '44'"),
    ({"routes": [{"to": "+15551230001", "fallback_dial": "front desk"}]},
     "routes.0.fallback_dial: expected an E.164 number like +15551230001, got 'front desk'"),
    ({"routes": [{"agent": "default"}]},
     "routes.0: a route needs to, from_prefix, param.<name> or hours (no match keys: use [agent])"),
    ({"routes": [{"hours": "mon-fri 17:00-09:00"}]},
     "routes.0.hours: the end must be after the start in 17:00-09:00 (split an overnight window in two)"),
    ({"routes": [{"hours": "weekdays 09:00-17:00"}]},
     "routes.0.hours: unknown day 'weekdays' (mon tue wed thu fri sat sun, or a range like mon-fri)"),
    ({"routes": [{"hours": "mon 09:00"}]},
     "routes.0.hours: expected 'DAYS HH:MM-HH:MM' (e.g. 'mon-fri 09:00-17:30'), got 'mon 09:00'"),
    ({"routes": [{"hours": "mon 9-17"}]}, "routes.0.hours: bad time '9' (HH:MM, 00:00 to 24:00)"),
    ({"routes": [{"hours": "mon 09:00-17:00", "timezone": "Mars/Olympus"}]},
     "routes.0.timezone: unknown time zone 'Mars/Olympus' (an IANA name like Europe/Berlin)"),
    ({"routes": [{"to": "+15551230001"}, {"to": "+15551230001"}]},
     "routes.1: the same match as routes.0 (to = +15551230001): it would never match"),
    ({"routes": [{"param": {"li ne": "x"}}]},
     "routes.0.param: parameter names are letters, digits, '_' and '-', got 'li ne'"),
    ({"routing": {"webhook": "ftp://x"}}, "routing.webhook: expected an http(s):// URL, got 'ftp://x'"),
    ({"agent": {"provider": "openai", "openai": {"api_key": KEY, "instructions": "Hi {customer}"}}},
     "agent.openai.instructions: unknown template name {customer}: declare it in [routing.variables] "
     "(with its default), or write {customer?}"),
    ({"agents": {"v": {"provider": "vapi", "vapi": {"api_key": KEY, "assistant": {"firstMessage": "Hello {"}}}}},
     "agents.v.vapi.assistant.firstMessage: a stray '{' (write {{ for a literal brace)"),
    ({"agents": {"v": {"provider": "vapi", "vapi": {"api_key": KEY, "assistant": {
        "model": {"messages": [{"role": "system", "content": "for {who!r}"}]}}}}}},
     "agents.v.vapi.assistant.model.messages.0.content: {who!r} is not a template name "
     "(write {{ and }} for literal braces)"),
])
def test_problem_lines_name_the_key(data: dict, line: str) -> None:
    assert line in problems(data)


def test_a_declared_variable_and_optional_names_are_fine() -> None:
    cfg = build_config({"agent": {"provider": "openai", "openai": {
        "api_key": KEY, "instructions": "{{json}} {from} {to} {call_sid} {param.line} {tier} {nickname?}"}},
        "routing": {"variables": {"tier": "standard"}}})
    assert cfg.routing.variables == {"tier": "standard"}


def test_routes_and_routing_from_toml_and_env(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("""
[agents.sales]
provider = "echo"
[[routes]]
to = "+15551230001"
param.line = "sales"
agent = "sales"
tools = ["lookup_order"]
max_calls = 2
[routing]
webhook = "https://crm.example.com/route"
[[tools.functions]]
name = "lookup_order"
description = "Look up an order"
url = "https://crm.example.com/lookup"
""")
    cfg = load_config(f, environ={"TWIBRIDGE_ROUTING_TIMEOUT_S": "0.5", "TWIBRIDGE_TOOLS_SECRET": signing.new_secret(),
                                  "TWIBRIDGE_ROUTING_VARIABLES": '{"customer_name": "there"}'})
    route = cfg.routes[0]
    assert (route.to, route.param, route.agent, route.tools, route.max_calls) == (
        "+15551230001", {"line": "sales"}, "sales", ("lookup_order",), 2)
    assert (cfg.routing.timeout_s, cfg.routing.variables) == (0.5, {"customer_name": "there"})


def test_templates_render_every_kind_of_name() -> None:
    values = {"from": "+4930123", "param.line": "sales", "customer_name": "Ada"}
    assert render("{{literal}} {from} {param.line} {customer_name} {missing?}.", values) == \
        "{literal} +4930123 sales Ada ."
    assert template_problem("{from} {to} {call_sid} {param.x}", {}) is None
    assert template_problem("{x?}", {}) is None
    assert "unknown template name {x}" in str(template_problem("{x}", {}))
    assert template_problem("{x}", {"x": ""}) is None
    assert "stray '}'" in str(template_problem("a } b", {}))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


@pytest.mark.parametrize(("when", "inside"), [
    ("2026-12-03T09:00:00+01:00", True),    # Thursday, opening minute (Berlin)
    ("2026-12-03T17:29:59+01:00", True),
    ("2026-12-03T17:30:00+01:00", False),   # closing time is outside
    ("2026-12-03T08:30:00+00:00", True),    # 09:30 in Berlin
    ("2026-12-03T16:45:00+00:00", False),   # 17:45 in Berlin
    ("2026-12-05T10:00:00+01:00", False),   # Saturday
    ("2026-07-02T07:30:00+00:00", True),    # summer: 09:30 CEST
    ("2026-07-02T15:45:00+00:00", False),   # 17:45 CEST
])
def test_hours_in_a_timezone(when: str, inside: bool) -> None:
    assert in_hours(parse_hours("mon-fri 09:00-17:30"), "Europe/Berlin", at(when)) is inside


def test_hours_with_several_windows_and_a_wrapping_day_range() -> None:
    windows = parse_hours("fri-mon 10:00-14:00, wed 20:00-24:00")
    assert in_hours(windows, "UTC", at("2026-12-06T11:00:00+00:00"))      # Sunday
    assert in_hours(windows, "UTC", at("2026-12-07T13:59:00+00:00"))      # Monday
    assert not in_hours(windows, "UTC", at("2026-12-08T11:00:00+00:00"))  # Tuesday
    assert in_hours(windows, "UTC", at("2026-12-02T23:59:00+00:00"))      # Wednesday night


def test_the_routing_tables_from_the_environment_take_json() -> None:
    env = {"TWIBRIDGE_AGENTS": '{"sales": {"openai": {"api_key": "sk-from-env-0123"}, "provider": "openai"}}',
           "TWIBRIDGE_ROUTES": '[{"to": "+15551230001", "agent": "sales"}]'}
    cfg = load_config(None, environ=env)
    assert cfg.agent_config("sales").openai.api_key.get_secret_value() == "sk-from-env-0123"
    assert cfg.routes[0].agent == "sales" and "sk-from-env-0123" in cfg.secrets()
