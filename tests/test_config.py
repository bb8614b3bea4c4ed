"""Config: defaults, TOML, env overrides, one readable line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from twibridge.config import (
    ENV_NAMES, Config, ConfigError, build_config, load_config, serve_problems, with_overrides,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def test_builtin_defaults() -> None:
    cfg = load_config(None, environ={})
    assert (cfg.server.host, cfg.server.port, cfg.agent.provider) == ("127.0.0.1", 8080, "echo")
    assert (cfg.server.max_calls, cfg.server.drain_timeout_s) == (200, 30)
    assert (cfg.calls.max_duration_s, cfg.calls.idle_timeout_s) == (3600, 65)
    assert cfg.twilio.validate_signatures is True
    assert (cfg.log.level, cfg.log.format) == ("info", "json")


def test_example_config_is_valid_and_documents_every_key() -> None:
    cfg = load_config(EXAMPLE, environ={})
    assert cfg == Config()  # the example states the defaults
    text = EXAMPLE.read_text()
    for env, path in ENV_NAMES.items():
        assert f"{path[-1]} =" in text or f"# {path[-1]} =" in text, f"{'.'.join(path)} not documented"


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"server": {"port": "abc"}}, "server.port: expected an integer 1-65535, got 'abc'"),
        ({"twilio": {"stream_token_ttl_s": 0}}, "twilio.stream_token_ttl_s: expected a number > 0 and <= 3600, got 0"),
        ({"server": {"prot": 80}}, "server.prot: unknown key"),
        ({"sever": {}}, "sever: unknown key"),
        ({"agent": {"provider": "nope"}}, "agent.provider: expected 'echo', 'vapi', 'openai', 'websocket', 'azure_openai', 'deepgram', 'elevenlabs' or 'gemini', got 'nope'"),
        ({"twilio": {"validate_signatures": "maybe"}}, "twilio.validate_signatures: expected true or false, got 'maybe'"),
        ({"turns": {"barge_in": "never"}}, "turns.barge_in: expected 'provider', 'local' or 'both', got 'never'"),
        ({"agent": {"provider": "openai"}}, "agent.openai.api_key: required when agent.provider = 'openai'"),
        ({"server": {"public_url": "ftp://x"}}, "server.public_url: expected an http(s):// URL, got 'ftp://x'"),
    ],
)
def test_problem_lines_name_the_key(data: dict, line: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build_config(data)
    assert line in exc.value.problems


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as exc:
        build_config({"server": {"port": "abc", "max_calls": 0}, "log": {"level": "loud"}})
    assert len(exc.value.problems) == 3


def test_env_overrides_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[server]\nport = 9000\n[agent.openai]\nmodel = "x"\n')
    cfg = load_config(f, environ={"TWIBRIDGE_SERVER_PORT": "9100", "TWIBRIDGE_TWILIO_AUTH_TOKEN": "tok-123456",
                                  "TWIBRIDGE_AGENT_OPENAI_API_KEY": "sk-test-abcdef",
                                  "TWIBRIDGE_AGENT_WEBSOCKET_HEADERS": '{"X-Key": "v-123456"}'})
    assert cfg.server.port == 9100
    assert cfg.twilio.auth_token.get_secret_value() == "tok-123456"
    assert cfg.agent.openai.api_key.get_secret_value() == "sk-test-abcdef"
    assert cfg.agent.openai.model == "x"
    assert cfg.agent.websocket.headers["X-Key"].get_secret_value() == "v-123456"


def test_unknown_env_name_is_an_error() -> None:
    with pytest.raises(ConfigError, match="TWIBRIDGE_SERVER_PROT: unknown environment variable"):
        load_config(None, environ={"TWIBRIDGE_SERVER_PROT": "1"})


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport=1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml", environ={})


def test_secrets_never_in_repr() -> None:
    cfg = load_config(None, environ={"TWIBRIDGE_TWILIO_AUTH_TOKEN": "supersecret-token"})
    assert "supersecret-token" not in repr(cfg) and "supersecret-token" not in str(cfg.model_dump())
    assert "supersecret-token" in cfg.secrets()


def test_serve_refuses_unsigned_without_token() -> None:
    assert serve_problems(Config()) and "auth_token" in serve_problems(Config())[0]
    assert serve_problems(build_config({"twilio": {"validate_signatures": False}})) == []
    assert serve_problems(with_overrides(Config(), twilio={"auth_token": "t" * 32})) == []


def test_systemd_credentials_are_read_and_env_still_wins(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "TWIBRIDGE_TWILIO_AUTH_TOKEN").write_text("from-credential-123\n")
    (creds / "TWIBRIDGE_AGENT_OPENAI_API_KEY").write_text("sk-cred-456")
    (creds / "other-service-secret").write_text("not ours")
    cfg = load_config(None, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.twilio.auth_token.get_secret_value() == "from-credential-123"  # newline stripped
    assert cfg.agent.openai.api_key.get_secret_value() == "sk-cred-456"
    env_wins = load_config(None, environ={"CREDENTIALS_DIRECTORY": str(creds),
                                          "TWIBRIDGE_TWILIO_AUTH_TOKEN": "from-env-789"})
    assert env_wins.twilio.auth_token.get_secret_value() == "from-env-789"
    (creds / "TWIBRIDGE_TWILIO_AUTH_TOKNE").write_text("typo")
    with pytest.raises(ConfigError, match="TWIBRIDGE_TWILIO_AUTH_TOKNE: unknown"):
        load_config(None, environ={"CREDENTIALS_DIRECTORY": str(creds)})


# -- the second wave of providers and [agent] failover (issue #20) ----------------


@pytest.mark.parametrize(("agent", "message"), [
    ({"provider": "deepgram"}, "agent.deepgram.api_key: required when agent.provider = 'deepgram'"),
    ({"provider": "gemini"}, "agent.gemini.api_key: required when agent.provider = 'gemini'"),
    ({"provider": "elevenlabs"}, "agent.elevenlabs.agent_id: required when agent.provider = 'elevenlabs'"),
    ({"provider": "azure_openai", "azure_openai": {"api_key": "k" * 8, "deployment": "d"}},
     "agent.azure_openai.url: required when agent.provider = 'azure_openai'"),
    ({"failover": ["openai"]}, "agent.openai.api_key: required when agent.failover lists 'openai'"),
    ({"failover": ["echo"]}, "agent.failover: 'echo' is listed twice (or is agent.provider)"),
    ({"failover": ["nope"]}, "agent.failover.0: expected"),
])
def test_new_provider_and_failover_rules_name_the_key(agent: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"agent": agent})
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems


def test_failover_from_the_environment_and_new_keys_are_secrets() -> None:
    from twibridge.config import apply_env

    data = apply_env({}, {"TWIBRIDGE_AGENT_FAILOVER": '["gemini", "echo"]',
                          "TWIBRIDGE_AGENT_GEMINI_API_KEY": "AIza-secret-123456",
                          "TWIBRIDGE_AGENT_DEEPGRAM_API_KEY": "dg-secret-123456"})
    cfg = build_config({**data, "agent": {**data["agent"], "provider": "deepgram"}})
    assert cfg.agent.failover == ["gemini", "echo"]
    assert {"AIza-secret-123456", "dg-secret-123456"} <= set(cfg.secrets())
    assert "AIza-secret-123456" not in repr(cfg)
