"""Agent providers that misbehave on purpose, chosen per call.

Installed with ``rt.provider_factory = lambda cfg: ModalProvider(cfg)``; each
call picks a behaviour with the custom ``<Parameter name="mode">`` of its
``start`` (``Leg.start({"mode": ...})``), so one server can host healthy and
broken calls side by side:

* ``echo`` (default): the embedded echo agent;
* ``crash``: the provider's code raises a plain bug (``RuntimeError``) on the
  first audio: the call must end (close 1011, ``outcome=error``), nothing else;
* ``fail``: the provider refuses the session (``AgentFailed``);
* ``drop``: every connection breaks at once (``AgentDisconnected``) until the
  supervisor gives up;
* ``drop-once``: the first connection breaks, the reconnect works (echo).
"""

from __future__ import annotations

from collections import Counter

import trio

from twibridge.agents.base import AgentDisconnected, AgentEvent, AgentFailed, CallInfo
from twibridge.agents.echo import EchoProvider, EchoSession
from twibridge.config import Config


class _BrokenSession(EchoSession):
    def __init__(self, config: Config, call: CallInfo, error: BaseException) -> None:
        super().__init__(config, call)
        self._error = error
        self._audio = trio.Event()

    async def send_audio(self, ulaw: bytes) -> None:
        self._audio.set()

    async def receive(self) -> AgentEvent:
        await self._audio.wait()
        raise self._error


class ModalProvider(EchoProvider):
    name = "modal"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.connects: Counter[str] = Counter()  # by CallSid

    async def connect(self, call: CallInfo, nursery: trio.Nursery) -> EchoSession:
        mode = call.params.get("mode", "echo")
        self.connects[call.call_sid] += 1
        if mode == "crash":
            return _BrokenSession(self.config, call, RuntimeError("agent bug (injected)"))
        if mode == "fail":
            raise AgentFailed("provider refused the session (injected)")
        if mode == "drop" or (mode == "drop-once" and self.connects[call.call_sid] == 1):
            return _BrokenSession(self.config, call, AgentDisconnected("provider connection lost (injected)"))
        return await super().connect(call, nursery)
