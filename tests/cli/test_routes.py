"""``twibridge routes``: which agent a call would get and why; and validate-config on the routing tables."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from twibridge.cli.main import app
from twibridge.webhooks.signing import new_secret

CONFIG = """
[agents.sales]
provider = "echo"
[agents.uk]
provider = "echo"
[[routes]]
to = "+15551230001"
agent = "sales"
max_calls = 3
[[routes]]
from_prefix = "+44"
hours = "mon-sun 00:00-24:00"
agent = "uk"
[routing]
webhook = "https://crm.example.com/route?key=abc"
secret = "{secret}"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "twibridge.toml"
    path.write_text(text)
    return str(path)


def test_without_options_it_lists_agents_and_routes_in_order(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["routes", "--config", write(tmp_path, CONFIG.format(secret=new_secret()))])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[:5] == [
        "agents: default (echo, [agent]), sales (echo), uk (echo)",
        "routes (first match wins):",
        "  routes.0: to = +15551230001 -> sales, max_calls 3",
        "  routes.1: from_prefix = +44, hours = mon-sun 00:00-24:00 UTC -> uk",
        "  otherwise -> default",
    ]
    assert "lookup: https://crm.example.com/route is asked first" in out.output
    assert "key=abc" not in out.output  # a query string may hold a credential


def test_a_call_s_agent_and_why(tmp_path: Path) -> None:
    cfg = write(tmp_path, CONFIG.format(secret=new_secret()))
    out = CliRunner().invoke(app, ["routes", "--config", cfg, "--to", "+15559990000", "--from", "+442071234567"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[:3] == [
        "agent: uk (echo)",
        "why: routes.1 matched (from_prefix = +44, hours = mon-sun 00:00-24:00 UTC)",
        "not: routes.0: to is +15559990000, not +15551230001",
    ]
    out = CliRunner().invoke(app, ["routes", "--config", cfg, "--to", "+15550000000"])
    assert out.output.splitlines()[:2] == ["agent: default (echo)", "why: no route matched: [agent]"]


def test_bad_numbers_are_usage_errors(tmp_path: Path) -> None:
    cfg = write(tmp_path, CONFIG.format(secret=new_secret()))
    out = CliRunner().invoke(app, ["routes", "--config", cfg, "--to", "5551230001"])
    assert out.exit_code == 2
    assert "--to: expected an E.164 number like +15551230001, got '5551230001'" in out.output
    assert CliRunner().invoke(app, ["routes", "--config", cfg, "--param", "novalue"]).exit_code == 2


def test_validate_config_checks_the_routing_tables(tmp_path: Path) -> None:
    bad = CONFIG.format(secret="hunter2").replace('agent = "uk"', 'agent = "ukk"')
    out = CliRunner().invoke(app, ["validate-config", write(tmp_path, bad)])
    assert out.exit_code == 2
    assert "routes.1.agent: no agent 'ukk' (define [agents.ukk], or 'default' for [agent])" in out.output
    out = CliRunner().invoke(app, ["validate-config", write(tmp_path, CONFIG.format(secret="hunter2"))])
    assert out.exit_code == 2
    assert "routing.secret: expected a Standard Webhooks secret, 'whsec_' followed by base64" in out.output
    secret = new_secret()
    out = CliRunner().invoke(app, ["validate-config", write(tmp_path, CONFIG.format(secret=secret))])
    assert out.exit_code == 0 and out.output.strip().endswith("ok")
    assert secret not in out.output
