"""The config sections that every twibridge has: server, Twilio, the agent and
its providers, calls, turns, fallback, logs, state.

A capability with its own TOML table keeps its section in a module of its
own beside this one (named for the capability), added as one field of
:class:`twibridge.config.Config`.  Every section forbids unknown keys (a typo
must not pass silently) and holds secrets as ``SecretStr``.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from twibridge.config.base import _Section as _Section  # re-exported: capability modules subclass it
from twibridge.config.providers import (
    AzureOpenAIAgentConfig, DeepgramAgentConfig, ElevenLabsAgentConfig, GeminiAgentConfig,
)

class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_url: str = ""
    max_calls: int = Field(200, ge=1, le=100_000)
    drain_timeout_s: float = Field(30.0, ge=0, le=3600)
    metrics_token: SecretStr = SecretStr("")
    max_message_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024)
    workers: int = Field(1, ge=1, le=64)
    # Security hardening (issue #23, docs/security.md).  Webhook bodies: Twilio's
    # /voice form is a few KB; past these the request is refused (413 / 408).
    max_body_bytes: int = Field(65536, ge=4096, le=16 * 1024 * 1024)
    max_form_fields: int = Field(200, ge=10, le=10_000)
    body_timeout_s: float = Field(10.0, gt=0, le=120)
    # Concurrent connections of this process (closed at accept beyond), and
    # concurrent HTTP requests / unverified WebSocket handshakes per client address.
    max_connections: int = Field(1000, ge=2, le=1_000_000)
    max_connections_per_address: int = Field(50, ge=1, le=1_000_000)
    # Addresses/CIDRs of reverse proxies whose X-Forwarded-For names the client.
    trusted_proxies: list[str] = Field(default_factory=list)
    # Signatures off on a non-loopback host: refused at start unless this is true.
    allow_unsigned_public: bool = False
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
        for entry in self.trusted_proxies:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"server.trusted_proxies: {entry!r} is not an IP address or CIDR") from None
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
    # Without stream tokens (or signatures) a stream's CallSid is unproven: agent-driven
    # REST call control (hang-up, transfer, fallback) stays off unless this is set on purpose.
    trust_unsigned_streams: bool = False
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
    #: The credential VAPI sends to ``POST /vapi/server`` (``X-Vapi-Secret`` or ``Authorization: Bearer``).
    server_secret: SecretStr = SecretStr("")

class OpenAIAgentConfig(_Section):
    api_key: SecretStr = SecretStr("")
    model: str = "gpt-realtime"
    voice: str = "marin"
    instructions: str = "You are a helpful, concise customer-support agent on a phone call."
    url: str = "wss://api.openai.com/v1/realtime"

class WebsocketAgentConfig(_Section):
    url: str = ""
    headers: dict[str, SecretStr] = Field(default_factory=dict)

ProviderName = Literal["echo", "vapi", "openai", "websocket", "azure_openai", "deepgram", "elevenlabs", "gemini"]
#: provider → (its sub-table's secret key that must be set, or None)
_REQUIRED_KEY = {"openai": "api_key", "vapi": "api_key", "azure_openai": "api_key", "deepgram": "api_key",
                 "gemini": "api_key"}

class AgentConfig(_Section):
    provider: ProviderName = "echo"
    #: Providers to continue the call on, in order, when the current one fails for good.
    failover: list[ProviderName] = Field(default_factory=list)
    connect_timeout_s: float = Field(10.0, gt=0, le=120)
    reconnect_attempts: int = Field(3, ge=0, le=20)
    reconnect_backoff_s: float = Field(0.5, gt=0, le=60)
    reconnect_backoff_max_s: float = Field(8.0, gt=0, le=600)
    connect_buffer_ms: int = Field(5000, ge=0, le=60_000)
    #: What the agent says first, without waiting for the caller (each provider its own way).
    greeting: str = Field("", max_length=1000)
    echo: EchoAgentConfig = EchoAgentConfig()
    vapi: VapiAgentConfig = VapiAgentConfig()
    openai: OpenAIAgentConfig = OpenAIAgentConfig()
    websocket: WebsocketAgentConfig = WebsocketAgentConfig()
    azure_openai: AzureOpenAIAgentConfig = AzureOpenAIAgentConfig()
    deepgram: DeepgramAgentConfig = DeepgramAgentConfig()
    elevenlabs: ElevenLabsAgentConfig = ElevenLabsAgentConfig()
    gemini: GeminiAgentConfig = GeminiAgentConfig()

    @model_validator(mode="after")
    def _check_provider(self) -> AgentConfig:
        seen = {self.provider}
        for name in self.failover:
            if name in seen:
                raise ValueError(f"agent.failover: {name!r} is listed twice (or is agent.provider)")
            seen.add(name)
        for name in (self.provider, *self.failover):
            self._check_one(name, "agent.provider" if name == self.provider else "agent.failover")
        if self.reconnect_backoff_max_s < self.reconnect_backoff_s:
            raise ValueError("agent.reconnect_backoff_max_s: must be >= reconnect_backoff_s")
        return self

    def _check_one(self, name: str, via: str) -> None:
        """What provider ``name`` needs before a call can use it."""
        when = f"required when {via} = {name!r}" if via == "agent.provider" else f"required when {via} lists {name!r}"
        key = _REQUIRED_KEY.get(name)
        if key is not None and not getattr(getattr(self, name), key).get_secret_value():
            raise ValueError(f"agent.{name}.{key}: {when}")
        if name == "vapi" and not (self.vapi.assistant_id or self.vapi.assistant):
            raise ValueError("agent.vapi.assistant_id: set it (or an inline [agent.vapi.assistant])")
        if name == "websocket" and not self.websocket.url:
            raise ValueError(f"agent.websocket.url: {when}")
        if name == "azure_openai":
            for field in ("url", "deployment"):
                if not getattr(self.azure_openai, field):
                    raise ValueError(f"agent.azure_openai.{field}: {when}")
        if name == "elevenlabs" and not self.elevenlabs.agent_id:
            raise ValueError(f"agent.elevenlabs.agent_id: {when}")

class CallsConfig(_Section):
    max_duration_s: float = Field(3600.0, gt=0, le=4 * 3600)
    idle_timeout_s: float = Field(65.0, gt=0, le=3600)
    inbound_queue_frames: int = Field(250, ge=10, le=10_000)
    agent_queue_events: int = Field(500, ge=10, le=100_000)
    teardown_timeout_s: float = Field(2.0, gt=0, le=60)
    #: A WAV the bridge plays the instant the stream starts, while the agent connects.
    greeting_sound: str = ""
    #: Neither side has spoken this long (after the agent's audio was played): a check-in; 0 disables.
    idle_prompt_s: float = Field(8.0, ge=0, le=600)
    #: Check-ins before a goodbye and a hang-up.
    idle_prompts: int = Field(2, ge=0, le=10)

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
    # Caller transcripts (what the agent reported) are the caller's speech: kept only if asked.
    keep_transcripts: bool = False
    transcript_ttl_s: int = Field(24 * 3600, ge=60)
