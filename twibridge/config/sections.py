"""The config sections that every twibridge has: server, Twilio, the agent and
its providers, calls, turns, fallback, logs, state.

A capability with its own TOML table keeps its section in a module of its
own beside this one (named for the capability), added as one field of
:class:`twibridge.config.Config`.  Every section forbids unknown keys (a typo
must not pass silently) and holds secrets as ``SecretStr``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_url: str = ""
    max_calls: int = Field(200, ge=1, le=100_000)
    drain_timeout_s: float = Field(30.0, ge=0, le=3600)
    metrics_token: SecretStr = SecretStr("")
    max_message_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024)
    workers: int = Field(1, ge=1, le=64)
    # TLS terminated by Hypercorn itself (PEM files; both or neither): see server/tls.py.
    tls_cert: str = ""
    tls_key: str = ""

    @model_validator(mode="after")
    def _check_public_url(self) -> ServerConfig:
        url = self.public_url
        if url and not (url.startswith("https://") or url.startswith("http://")):
            raise ValueError(f"server.public_url: expected an http(s):// URL, got {url!r}")
        if "?" in url or "#" in url:
            raise ValueError("server.public_url: must not contain a query string or fragment")
        return self

    @model_validator(mode="after")
    def _check_tls_pair(self) -> ServerConfig:
        if bool(self.tls_cert) != bool(self.tls_key):
            missing = "server.tls_key" if self.tls_cert else "server.tls_cert"
            raise ValueError(f"{missing}: set server.tls_cert and server.tls_key together (or neither)")
        return self


class TwilioConfig(_Section):
    account_sid: str = ""
    auth_token: SecretStr = SecretStr("")
    validate_signatures: bool = True
    # Streams must carry the per-call token /voice puts in the TwiML (only
    # while validate_signatures is on): see twibridge/twilio/stream_token.py.
    require_stream_token: bool = True
    stream_token_ttl_s: float = Field(60.0, gt=0, le=3600)
    api_base_url: str = "https://api.twilio.com"
    rest_timeout_s: float = Field(10.0, gt=0, le=120)
    from_number: str = ""


class EchoAgentConfig(_Section):
    max_utterance_s: float = Field(30.0, gt=0, le=600)


class VapiAgentConfig(_Section):
    api_key: SecretStr = SecretStr("")
    assistant_id: str = ""
    assistant: dict[str, Any] = Field(default_factory=dict)
    base_url: str = "https://api.vapi.ai"


class OpenAIAgentConfig(_Section):
    api_key: SecretStr = SecretStr("")
    model: str = "gpt-realtime"
    voice: str = "marin"
    instructions: str = "You are a helpful, concise customer-support agent on a phone call."
    url: str = "wss://api.openai.com/v1/realtime"


class WebsocketAgentConfig(_Section):
    url: str = ""
    headers: dict[str, SecretStr] = Field(default_factory=dict)


class AgentConfig(_Section):
    provider: Literal["echo", "vapi", "openai", "websocket"] = "echo"
    connect_timeout_s: float = Field(10.0, gt=0, le=120)
    reconnect_attempts: int = Field(3, ge=0, le=20)
    reconnect_backoff_s: float = Field(0.5, gt=0, le=60)
    reconnect_backoff_max_s: float = Field(8.0, gt=0, le=600)
    connect_buffer_ms: int = Field(5000, ge=0, le=60_000)
    echo: EchoAgentConfig = EchoAgentConfig()
    vapi: VapiAgentConfig = VapiAgentConfig()
    openai: OpenAIAgentConfig = OpenAIAgentConfig()
    websocket: WebsocketAgentConfig = WebsocketAgentConfig()

    @model_validator(mode="after")
    def _check_provider(self) -> AgentConfig:
        if self.provider == "openai" and not self.openai.api_key.get_secret_value():
            raise ValueError("agent.openai.api_key: required when agent.provider = 'openai'")
        if self.provider == "vapi":
            if not self.vapi.api_key.get_secret_value():
                raise ValueError("agent.vapi.api_key: required when agent.provider = 'vapi'")
            if not (self.vapi.assistant_id or self.vapi.assistant):
                raise ValueError("agent.vapi.assistant_id: set it (or an inline [agent.vapi.assistant])")
        if self.provider == "websocket" and not self.websocket.url:
            raise ValueError("agent.websocket.url: required when agent.provider = 'websocket'")
        if self.reconnect_backoff_max_s < self.reconnect_backoff_s:
            raise ValueError("agent.reconnect_backoff_max_s: must be >= reconnect_backoff_s")
        return self


class CallsConfig(_Section):
    max_duration_s: float = Field(3600.0, gt=0, le=4 * 3600)
    idle_timeout_s: float = Field(65.0, gt=0, le=3600)
    inbound_queue_frames: int = Field(250, ge=10, le=10_000)
    agent_queue_events: int = Field(500, ge=10, le=100_000)
    teardown_timeout_s: float = Field(2.0, gt=0, le=60)


class TurnsConfig(_Section):
    vad_threshold: float = Field(0.5, ge=0.0, le=1.0)
    debounce_ms: int = Field(300, ge=0, le=5000)
    end_of_turn_ms: int = Field(500, ge=20, le=10_000)
    barge_in: Literal["provider", "local", "both"] = "both"
    jitter_window_ms: int = Field(60, ge=0, le=1000)
    outbound_lead_ms: int = Field(200, ge=20, le=5000)
    chunk_ms: int = Field(100, ge=20, le=1000)
    echo_margin_db: float = Field(10.0, ge=0, le=60)


class FallbackConfig(_Section):
    say: str = "Sorry, we cannot take your call right now. Please try again later."
    dial: str = ""


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class StateConfig(_Section):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    history_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    record_ttl_s: int = Field(30, ge=5, le=3600)
    timeout_s: float = Field(1.0, gt=0, le=30)
