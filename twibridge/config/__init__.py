"""Configuration: TOML file, then ``TWIBRIDGE_<SECTION>_<KEY>`` env overrides.

Validation is pydantic's (typer already depends on it); this module only adds
what users need around it: one readable line per problem naming the dotted
key (``server.port: expected an integer 1-65535, got 'abc'``), unknown keys
rejected (a typo must not pass silently), and secrets held as ``SecretStr`` so
no repr, log line or traceback can show them.

Search order for ``serve`` without ``--config``: ``./twibridge.toml``, then
``/etc/twibridge/twibridge.toml``, else built-in defaults (echo agent on
127.0.0.1:8080).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Mapping, get_origin

from pydantic import BaseModel, SecretStr, ValidationError, model_validator

from twibridge.config.transfer import TransferConfig
from twibridge.config.outbound import OutboundConfig
from twibridge.config.sections import (
    AgentConfig, CallsConfig, EchoAgentConfig, FallbackConfig, LogConfig, OpenAIAgentConfig, ServerConfig,
    StateConfig, TurnsConfig, TwilioConfig, VapiAgentConfig, WebsocketAgentConfig, _Section,
)
from twibridge.config.tools import ToolFunctionConfig, ToolsConfig
from twibridge.config.records import RecordingConfig, RedactConfig, WebhooksConfig
from twibridge.config import routing as _routing
from twibridge.config.routing import Route, RoutingConfig

__all__ = [
    "AgentConfig", "CallsConfig", "Config", "ConfigError", "EchoAgentConfig", "FallbackConfig", "LogConfig",
    "OpenAIAgentConfig", "Route", "RoutingConfig", "ServerConfig", "StateConfig", "ToolFunctionConfig", "ToolsConfig",
    "TransferConfig", "TurnsConfig", "TwilioConfig", "VapiAgentConfig",
    "WebsocketAgentConfig", "build_config", "default_config_path", "load_config", "read_toml", "serve_problems",
    "with_overrides",
]

ENV_PREFIX = "TWIBRIDGE_"
DEFAULT_PATHS = (Path("twibridge.toml"), Path("/etc/twibridge/twibridge.toml"))


class Config(_Section):
    server: ServerConfig = ServerConfig()
    twilio: TwilioConfig = TwilioConfig()
    agent: AgentConfig = AgentConfig()
    calls: CallsConfig = CallsConfig()
    turns: TurnsConfig = TurnsConfig()
    fallback: FallbackConfig = FallbackConfig()
    log: LogConfig = LogConfig()
    state: StateConfig = StateConfig()
    transfer: TransferConfig = TransferConfig()
    tools: ToolsConfig = ToolsConfig()
    outbound: OutboundConfig = OutboundConfig()
    recording: RecordingConfig = RecordingConfig()
    redact: RedactConfig = RedactConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    #: Named agents (``[agents.NAME]``, merged over ``[agent]``), routes and the lookup: config/routing.py.
    agents: dict[str, AgentConfig] = {}
    routes: tuple[Route, ...] = ()
    routing: RoutingConfig = RoutingConfig()

    @model_validator(mode="before")
    @classmethod
    def _merge_agents(cls, data: Any) -> Any:
        return _routing.merge_agents(data)

    @model_validator(mode="after")
    def _check_routing(self) -> Config:
        names = {f.name for f in self.tools.functions}  # a route's `tools` picks among [[tools.functions]]
        problems = _routing.problems(self.agent, self.agents, self.routes, self.routing, names)
        if self.transfer.mode == "warm" and not self.server.public_url:
            problems.append("transfer.mode = \"warm\": server.public_url is required (Twilio posts the human "
                            "leg's status to <public_url>/transfer-status); env TWIBRIDGE_SERVER_PUBLIC_URL")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def agent_config(self, name: str) -> AgentConfig:
        """``[agent]`` for ``"default"`` (or an unknown name), else ``[agents.NAME]``."""
        return self.agents.get(name, self.agent)

    def secrets(self) -> list[str]:
        """Every secret value set, so the log layer can scrub them anywhere.

        Found by walking the model: any ``SecretStr`` anywhere (a new section's
        included) is a secret; the Redis URL only when it carries a password.
        """
        found: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, SecretStr):
                found.append(node.get_secret_value())
            elif isinstance(node, BaseModel):
                for name in type(node).model_fields:
                    walk(getattr(node, name))
            elif isinstance(node, dict):
                for value in node.values():
                    walk(value)
            elif isinstance(node, (list, tuple)):
                for value in node:
                    walk(value)

        for name in type(self).model_fields:
            if name != "state":
                walk(getattr(self, name))
        redis_url = self.state.redis_url.get_secret_value()
        if "@" in redis_url:  # a URL with a password in it
            found.append(redis_url)
        return [s for s in dict.fromkeys(found) if len(s) >= 6]


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` holds one line per key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def default_config_path() -> Path | None:
    for p in DEFAULT_PATHS:
        if p.is_file():
            return p
    return None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None


def _env_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """Map every leaf key to its env name: agent.openai.api_key → TWIBRIDGE_AGENT_OPENAI_API_KEY."""
    out: dict[str, tuple[str, ...]] = {}
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(_env_paths(ann, path))
        else:
            out[ENV_PREFIX + "_".join(path).upper()] = path
    return out


ENV_NAMES = _env_paths(Config)


def _json_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Keys whose value is a table or an array: their env variable takes JSON."""
    out: set[tuple[str, ...]] = set()
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= _json_paths(ann, (*prefix, name))
        elif get_origin(ann) in (dict, list, tuple) or ann in (dict, list):
            out.add((*prefix, name))
    return out


JSON_ENV = _json_paths(Config)


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay ``TWIBRIDGE_*`` variables onto the parsed TOML (env wins).

    Tables (e.g. ``agent.websocket.headers``) take a JSON object.  Unknown
    ``TWIBRIDGE_*`` names are errors, like unknown keys in the file.
    """
    problems = []
    for env, value in environ.items():
        if not env.startswith(ENV_PREFIX):
            continue
        path = ENV_NAMES.get(env)
        if path is None:
            problems.append(f"{env}: unknown environment variable (no such config key)")
            continue
        parsed: Any = value
        if path in JSON_ENV:
            try:
                parsed = json.loads(value)
            except ValueError:
                problems.append(f"{env}: expected a JSON object")
                continue
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = parsed
    if problems:
        raise ConfigError(problems)
    return data


def _describe(err: Mapping[str, Any], model: type[BaseModel]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        return f"{loc}: unknown key"
    if kind == "value_error":
        msg = str(err["msg"]).removeprefix("Value error, ")
        if loc.startswith("agents.") and msg.startswith("agent."):  # [agent]'s own checks, on a named agent
            msg = re.sub(r"\bagent\.", loc + ".", msg)
        return msg if ":" in msg.split(" ")[0] else (f"{loc}: {msg}" if loc else msg)
    field = _field_for(model, err["loc"])
    bounds = _bounds(field) if field is not None else ""
    bounded = kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}
    if kind.startswith("int_") or (bounded and field is not None and field.annotation is int):
        return f"{loc}: expected an integer{bounds}, got {got!r}"
    if kind.startswith("float_") or bounded:
        return f"{loc}: expected a number{bounds}, got {got!r}"
    if kind.startswith("bool_"):
        return f"{loc}: expected true or false, got {got!r}"
    if kind == "literal_error":
        return f"{loc}: expected {err.get('ctx', {}).get('expected', 'one of the allowed values')}, got {got!r}"
    if kind in {"string_type", "dict_type", "model_type"}:
        want = {"string_type": "a string", "dict_type": "a table", "model_type": "a table"}[kind]
        return f"{loc}: expected {want}, got {got!r}"
    return f"{loc}: {err['msg']}, got {got!r}"


def _field_for(model: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    node: Any = model
    info = None
    for part in loc:
        if not (isinstance(node, type) and issubclass(node, BaseModel)) or part not in node.model_fields:
            return None
        info = node.model_fields[part]
        node = info.annotation
    return info


def _bounds(info: Any) -> str:
    """The field's range as users read it: " 1-65535" when both ends are allowed."""
    lo = hi = None
    lo_op, hi_op = ">=", "<="
    for m in getattr(info, "metadata", []):
        if getattr(m, "ge", None) is not None:
            lo, lo_op = m.ge, ">="
        if getattr(m, "gt", None) is not None:
            lo, lo_op = m.gt, ">"
        if getattr(m, "le", None) is not None:
            hi, hi_op = m.le, "<="
        if getattr(m, "lt", None) is not None:
            hi, hi_op = m.lt, "<"
    if lo is not None and hi is not None:
        return f" {lo}-{hi}" if (lo_op, hi_op) == (">=", "<=") else f" {lo_op} {lo} and {hi_op} {hi}"
    if lo is not None:
        return f" {lo_op} {lo}"
    if hi is not None:
        return f" {hi_op} {hi}"
    return ""


def build_config(data: Mapping[str, Any]) -> Config:
    """Validate a parsed mapping; raise :class:`ConfigError` listing every problem."""
    try:
        return Config.model_validate(dict(data))
    except ValidationError as exc:
        problems = [line for e in exc.errors() for line in _describe(e, Config).split("\n")]
        raise ConfigError(sorted(dict.fromkeys(problems))) from None


def read_credentials(environ: Mapping[str, str]) -> dict[str, str]:
    """systemd ``LoadCredential=``: files named like the env variables.

    ``LoadCredential=TWIBRIDGE_TWILIO_AUTH_TOKEN:/etc/twibridge/auth_token`` puts
    the secret in ``$CREDENTIALS_DIRECTORY/TWIBRIDGE_TWILIO_AUTH_TOKEN``, readable
    by the service alone and never in its environment.  One trailing newline
    is stripped.  Files not named ``TWIBRIDGE_*`` are someone else's.
    """
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return {}
    found: dict[str, str] = {}
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise ConfigError([f"$CREDENTIALS_DIRECTORY: cannot read {directory}: {exc.strerror}"]) from None
    for name in names:
        if name.startswith(ENV_PREFIX):
            try:
                found[name] = (Path(directory) / name).read_text(encoding="utf-8").removesuffix("\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError([f"credential {name}: cannot read: {exc}"]) from None
    return found


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Load ``path`` (or built-in defaults when None), then systemd credentials,
    then ``TWIBRIDGE_*`` env overrides (each wins over the one before)."""
    env = os.environ if environ is None else environ
    data = read_toml(path) if path is not None else {}
    data = apply_env(data, {**read_credentials(env), **{k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}})
    return build_config(data)


def with_overrides(config: Config, **sections: Mapping[str, Any]) -> Config:
    """A copy of ``config`` with some keys replaced, validated again.

    Used by ``simulate-call`` and tests (e.g. port 0, a generated token).
    """
    data = config.model_dump()
    for section, values in sections.items():
        node = data[section]
        for key, value in values.items():
            node[key] = value
    # SecretStr dumps as SecretStr; model_validate accepts it back.
    return build_config(data)


def serve_problems(config: Config) -> list[str]:
    """Problems that make ``serve`` refuse to start though the file is valid."""
    if config.twilio.validate_signatures and not config.twilio.auth_token.get_secret_value():
        return [
            "twilio.auth_token: empty while twilio.validate_signatures = true; set it (or env "
            "TWIBRIDGE_TWILIO_AUTH_TOKEN). Never accept unsigned traffic in production; for local "
            "development only, set validate_signatures = false."
        ]
    return []
