"""The ``azure_openai`` provider: Azure OpenAI Realtime (GA) = the OpenAI adapter, re-pointed.

Azure's GA endpoint (``wss://<resource>.openai.azure.com/openai/v1/realtime``)
speaks the OpenAI Realtime GA protocol unchanged (``session.update`` with
``audio/pcmu`` both ways, ``response.output_audio.*``, truncate, function
calls), so this module only changes what differs on the wire:

* the query is ``?model=<deployment>`` (the *deployment* name, not an
  OpenAI model id) and never ``api-version`` (that is the deprecated preview
  shape; mixing the two is a 404, so the config refuses it up front);
* the key goes in an ``api-key`` header instead of ``Authorization: Bearer``.

Everything else — barge-in, tools, transcripts, the history replayed into a
fresh session after a reconnect, bad-key handling — is
:class:`~twibridge.agents.openai.OpenAIProvider`'s.
"""

from __future__ import annotations

from twibridge.agents.openai import OpenAIProvider
from twibridge.config import Config


class AzureOpenAIProvider(OpenAIProvider):
    """``[agent] provider = "azure_openai"``; one instance per call (it keeps that call's history)."""

    name = "azure_openai"

    def __init__(self, config: Config) -> None:
        cfg = config.agent.azure_openai
        self._setup(cfg.url, cfg.deployment, cfg.voice, cfg.instructions, cfg.api_key)

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"api-key": key}
