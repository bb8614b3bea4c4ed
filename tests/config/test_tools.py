"""[tools]: every key checked, the bad one named (pydantic part here; file/wing checks in tools/checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import FIXTURES
from twibridge.cli.main import app
from twibridge.config import ConfigError, build_config, load_config
from twibridge.tools.checks import problems
from twibridge.webhooks import signing

SECRET = signing.new_secret()
FN = {"name": "lookup_order", "url": "https://crm.example.com/hooks/lookup_order",
      "parameters": {"type": "object", "properties": {"order_number": {"type": "string"}},
                     "required": ["order_number"]}}


def errors(tools: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build_config({"tools": tools})
    return info.value.problems


def test_defaults_and_a_good_function() -> None:
    cfg = build_config({"tools": {"secret": SECRET, "functions": [FN]}}).tools
    assert (cfg.timeout_s, cfg.max_in_flight, cfg.thinking_sound, cfg.thinking_after_ms) == (5.0, 4, "", 800)
    assert cfg.function("lookup_order") is not None and cfg.function("x") is None
    assert SECRET in build_config({"tools": {"secret": SECRET}}).secrets()  # scrubbed from logs


@pytest.mark.parametrize(("fn", "line"), [
    ({"name": "has space"}, "tools.functions.0.name: expected 1-64 letters, digits, '_' or '-', got 'has space'"),
    ({"name": "x" * 65}, "tools.functions.0.name: expected 1-64"),
    ({"name": "end_call"}, "tools.functions.0.name: 'end_call' is a built-in function (reserved)"),
    ({"name": "transfer_to_human"}, "tools.functions.0.name: 'transfer_to_human' is a built-in function"),
    ({"url": "ftp://crm"}, "tools.functions.0.url: expected an http(s):// URL, got 'ftp://crm'"),
    ({"url": "crm.example.com"}, "tools.functions.0.url: expected an http(s):// URL"),
    ({"parameters": {"type": "string"}}, 'tools.functions.0.parameters: must be a JSON-Schema object (type = "object")'),
    ({"parameters": {"type": "object", "required": "x"}}, "tools.functions.0.parameters: 'required' must be a list"),
    ({"timeout_s": 0}, "tools.functions.0.timeout_s: expected a number"),
    ({"nme": "typo"}, "tools.functions.0.nme: unknown key"),
])
def test_each_bad_key_is_named(fn: dict[str, Any], line: str) -> None:
    got = errors({"secret": SECRET, "functions": [{**FN, **fn}]})
    assert any(p.startswith(line) for p in got), got


def test_duplicates_and_the_secret() -> None:
    assert errors({"secret": SECRET, "functions": [FN, FN]}) == [
        "tools.functions.1.name: duplicate function name 'lookup_order'"]
    assert errors({"functions": [FN]})[0].startswith("tools.secret: required when functions are configured")
    assert errors({"max_in_flight": 0})[0].startswith("tools.max_in_flight: expected an integer")


def test_env_overrides() -> None:
    import json

    cfg = load_config(None, environ={"TWIBRIDGE_TOOLS_SECRET": SECRET,
                                     "TWIBRIDGE_TOOLS_FUNCTIONS": json.dumps([FN]),
                                     "TWIBRIDGE_AGENT_VAPI_SERVER_SECRET": "vapi-secret-123"})
    assert cfg.tools.secret.get_secret_value() == SECRET and cfg.tools.functions[0].name == "lookup_order"
    assert cfg.agent.vapi.server_secret.get_secret_value() == "vapi-secret-123"


def test_checks_that_need_io() -> None:
    bad = build_config({"tools": {"secret": "whsec_c2hvcnQ=", "thinking_sound": "/nonexistent.wav", "functions": [
        {**FN, "parameters": {"type": "object", "properties": {"n": {"type": 12}}}}]}})
    assert problems(bad) == [
        "tools.secret: the key must be 24-64 bytes (got 5)",
        "tools.functions.0.parameters: not a valid JSON Schema at properties.n.type: "
        "12 is not valid under any of the given schemas",
        "tools.thinking_sound: cannot read /nonexistent.wav: no such file",
    ]
    good = build_config({"tools": {"secret": SECRET, "thinking_sound": str(FIXTURES / "audio" / "hello_22k_pcm16.wav"),
                                   "functions": [FN]}})
    assert problems(good) == [] and problems(build_config({})) == []
    assert problems(build_config({"tools": {"secret": "nope"}})) == [
        "tools.secret: expected a Standard Webhooks secret, 'whsec_' followed by base64"]


def test_validate_config_names_them_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[tools]\nsecret = "whsec_bad"\nthinking_sound = "nope.wav"\n'
                    '[[tools.functions]]\nname = "lookup_order"\nurl = "http://127.0.0.1:9/x"\n')
    res = CliRunner().invoke(app, ["validate-config", str(path)])
    assert res.exit_code == 2
    assert f"{path}: tools.secret: the key must be 24-64 bytes" in res.output
    assert f"{path}: tools.thinking_sound: cannot read nope.wav: no such file" in res.output
    path.write_text('[[tools.functions]]\nname = "end_call"\nurl = "http://127.0.0.1:9/x"\n')
    res = CliRunner().invoke(app, ["validate-config", str(path)])
    assert res.exit_code == 2 and "tools.functions.0.name: 'end_call' is a built-in function" in res.output


def test_serve_refuses_to_start_on_them(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[twilio]\nauth_token = "t0k3n-0123456789"\n[tools]\nsecret = "whsec_bad"\n')
    res = CliRunner().invoke(app, ["serve", "--config", str(path), "--port", "9"])
    assert res.exit_code == 2 and "refusing to start: tools.secret: the key must be 24-64 bytes" in res.output
