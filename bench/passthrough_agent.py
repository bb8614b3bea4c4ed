"""A passthrough test agent: every caller frame comes straight back as reply audio.

For the bridge-latency bench (frame in → the same frame out on the wire):
one endless reply per session, so the bridge's writer streams it as frames
arrive.  A frame tagged ``BRG!`` (by ``bench.driver --barge-every-s``) is
not echoed: it becomes the provider's barge-in signal
(:class:`~twibridge.agents.base.SpeechStarted`); after the bridge's
``interrupt`` the agent continues under a new item id (the bridge drops
the interrupted one for good).

Injected with ``Runtime(provider_factory=PassthroughProvider)``
(``bench.bridge_server --agent passthrough``), so twibridge's provider
table is untouched.
"""

from __future__ import annotations

import trio

from twibridge.agents.base import AgentDisconnected, AgentEvent, AudioOut, CallInfo, SpeechStarted
from twibridge.config import Config

BARGE_TAG = b"BRG!"
#: Events buffered towards the bridge (a full buffer drops: the bench would show it as loss).
QUEUE_EVENTS = 1000


class PassthroughSession:
    def __init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel[AgentEvent](QUEUE_EVENTS)
        self._item = 1
        self.dropped = 0

    def _put(self, ev: AgentEvent) -> None:
        try:
            self._send.send_nowait(ev)
        except trio.WouldBlock:
            self.dropped += 1

    async def send_audio(self, ulaw: bytes) -> None:
        if ulaw[:4] == BARGE_TAG:
            self._put(SpeechStarted())
        else:
            self._put(AudioOut(f"pass-{self._item}", ulaw))

    async def send_dtmf(self, digit: str) -> None:
        return None

    async def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        self._item += 1

    async def mark_played(self, item_id: str, played_ms: int) -> None:
        return None

    async def receive(self) -> AgentEvent:
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise AgentDisconnected("passthrough agent closed") from None

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._recv.aclose()


class PassthroughProvider:
    name = "passthrough"

    def __init__(self, config: Config) -> None:
        self.config = config

    async def connect(self, call: CallInfo, nursery: trio.Nursery) -> PassthroughSession:
        return PassthroughSession()
