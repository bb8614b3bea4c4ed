"""Config sub-tables of the second wave of agent providers (issue #20).

``[agent.azure_openai]``, ``[agent.deepgram]``, ``[agent.elevenlabs]`` and
``[agent.gemini]``: exactly the keys the issue names, each documented in
``config.example.toml`` and ``docs/providers.md``.  API keys are
``SecretStr`` (never logged, scrubbed from any string).  Cross-field rules
("required when this provider is used") live on :class:`AgentConfig`, which
knows which providers a call may use (``provider`` plus ``failover``).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from pydantic import SecretStr, model_validator

from twibridge.config.base import _Section

DEFAULT_INSTRUCTIONS = "You are a helpful, concise customer-support agent on a phone call."


class AzureOpenAIAgentConfig(_Section):
    """Azure OpenAI Realtime (GA): the OpenAI protocol with ``api-key`` auth and ``?model=<deployment>``."""

    api_key: SecretStr = SecretStr("")
    url: str = ""  # wss://<resource>.openai.azure.com/openai/v1/realtime
    deployment: str = ""
    voice: str = "marin"
    instructions: str = DEFAULT_INSTRUCTIONS

    @model_validator(mode="after")
    def _check_url(self) -> AzureOpenAIAgentConfig:
        if self.url:
            parts = urlsplit(self.url)
            if parts.scheme not in ("ws", "wss"):
                raise ValueError(f"agent.azure_openai.url: expected a wss:// URL, got {self.url!r}")
            if "api-version" in parse_qs(parts.query):
                raise ValueError("agent.azure_openai.url: the GA endpoint takes no api-version "
                                 "(use wss://<resource>.openai.azure.com/openai/v1/realtime)")
        return self


class DeepgramAgentConfig(_Section):
    """Deepgram Voice Agent API v1; ``agent`` (a stored configuration id) wins over the inline keys."""

    api_key: SecretStr = SecretStr("")
    url: str = "wss://agent.deepgram.com/v1/agent/converse"
    agent: str = ""
    listen_model: str = "nova-3"
    think_provider: str = "open_ai"
    think_model: str = "gpt-4o-mini"
    speak_model: str = "aura-2-thalia-en"
    prompt: str = DEFAULT_INSTRUCTIONS
    greeting: str = ""


class ElevenLabsAgentConfig(_Section):
    """ElevenLabs Agents; with ``api_key`` (private agents) a signed URL is fetched per call."""

    api_key: SecretStr = SecretStr("")
    agent_id: str = ""
    url: str = "wss://api.elevenlabs.io/v1/convai/conversation"
    api_base_url: str = "https://api.elevenlabs.io"


class GeminiAgentConfig(_Section):
    """Gemini Live API (BidiGenerateContent WebSocket); audio is transcoded both ways."""

    api_key: SecretStr = SecretStr("")
    model: str = "gemini-2.5-flash-native-audio-preview-09-2025"
    voice: str = "Puck"
    instructions: str = DEFAULT_INSTRUCTIONS
    url: str = ("wss://generativelanguage.googleapis.com/ws/"
                "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent")
