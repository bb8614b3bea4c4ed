"""Agent providers behind one small interface (see :mod:`twibridge.agents.base`).

Adding a provider is one new module with a class implementing
``AgentProvider`` plus one line in :data:`PROVIDERS`.  Modules are imported
lazily so ``twibridge --help`` and the echo agent never pay for the others.
"""

from __future__ import annotations

import importlib

from twibridge.agents.base import AgentProvider
from twibridge.config import Config

#: provider name → "module:Class"
PROVIDERS: dict[str, str] = {
    "echo": "twibridge.agents.echo:EchoProvider",
    "openai": "twibridge.agents.openai:OpenAIProvider",
    "vapi": "twibridge.agents.vapi:VapiProvider",
    "websocket": "twibridge.agents.websocket:WebsocketProvider",
    "azure_openai": "twibridge.agents.azure_openai:AzureOpenAIProvider",
    "deepgram": "twibridge.agents.deepgram:DeepgramProvider",
    "elevenlabs": "twibridge.agents.elevenlabs:ElevenLabsProvider",
    "gemini": "twibridge.agents.gemini:GeminiProvider",
}


def make_provider(config: Config, name: str | None = None) -> AgentProvider:
    """The provider ``name`` (default: ``[agent] provider``) for one call."""
    module_name, _, cls_name = PROVIDERS[name or config.agent.provider].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    provider: AgentProvider = cls(config)
    return provider


def make_failover(config: Config) -> list[AgentProvider]:
    """The call's ``[agent] failover`` providers, in order (cheap: nothing connects yet)."""
    return [make_provider(config, name) for name in config.agent.failover]
