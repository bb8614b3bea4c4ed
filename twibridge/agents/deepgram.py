"""The ``deepgram`` provider: Deepgram Voice Agent API v1 over a WebSocket.

Thin I/O around :mod:`twibridge.agents.deepgram_protocol`: connect with
``Authorization: Token <key>`` (the key goes into that header and nowhere
else), answer ``Welcome`` with ``Settings``, wait for ``SettingsApplied``
(so refused settings fail the connect, where the supervisor falls back at
once), then pump binary μ-law both ways.

Keepalive: a ``KeepAlive`` text frame whenever no audio was sent for
``keepalive_s`` (Deepgram ends a silent session with ``CLIENT_MESSAGE_TIMEOUT``);
the bridge normally streams gap-filled audio, so it rarely fires.

Deepgram closes every session at 2 h (and an ``Error`` ends one): the
provider, which lives as long as the call, keeps the transcripts and seeds
the next session's ``agent.context.messages`` with them, so the conversation
survives the reconnect the supervisor makes.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping

import trio

from twibridge.agents.base import AgentDisconnected, AgentEvent, AgentFailed, CallInfo, SessionDefaults, Transcript
from twibridge.agents.deepgram_protocol import (
    KEEPALIVE, KEEPALIVE_INTERVAL_S, DeepgramConnection, DeepgramSettings,
)
from twibridge.agents.websocket import AgentSocket
from twibridge.config import Config
from twibridge.logs import get_logger

log = get_logger("twibridge.agent")

#: Past turns replayed into a fresh session (reconnect, 2 h cap, failover).
HISTORY_TURNS = 40


class DeepgramSession(SessionDefaults):
    """One Voice Agent connection for one call."""

    # send_dtmf, mark_played, prompt: SessionDefaults (the Voice Agent API has no DTMF input, ForceEndTurn is Flux-only).

    #: Binary audio takes any length: when frames are waiting, send up to 100 ms in one.
    audio_batch_frames = 5

    def __init__(self, sock: AgentSocket, proto: DeepgramConnection, history: deque[Transcript]) -> None:
        self.sock, self.proto, self.history = sock, proto, history
        self._pending: deque[AgentEvent] = deque()
        self.last_sent = trio.current_time()

    async def handshake(self) -> None:
        """``Welcome`` → ``Settings`` → ``SettingsApplied``; early events are kept for :meth:`receive`."""
        while not self.proto.ready:
            self._pending.extend(await self._next())

    async def keepalive(self, interval_s: float) -> None:
        """``KeepAlive`` after ``interval_s`` without audio.  Never raises into the
        connection's nursery: a dead socket is reported by :meth:`receive`."""
        try:
            while True:
                await trio.sleep_until(self.last_sent + interval_s)
                if trio.current_time() >= self.last_sent + interval_s:
                    self.last_sent = trio.current_time()
                    await self.sock.send(KEEPALIVE)
        except AgentDisconnected:
            return

    async def send_audio(self, ulaw: bytes) -> None:
        self.last_sent = trio.current_time()
        await self.sock.send(ulaw)

    async def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        self.proto.interrupt()

    async def send_tool_result(self, call_id: str, name: str, output: Mapping[str, Any]) -> None:
        message = self.proto.tool_result(call_id, name, output)
        if message is None:
            log.info("agent.deepgram.tool_result_dropped", call_id=call_id, name=name,
                     cancelled=call_id in self.proto.cancelled)
            return
        await self.sock.send(message)

    async def receive(self) -> AgentEvent:
        while not self._pending:
            self._pending.extend(await self._next())
        return self._pending.popleft()

    async def _next(self) -> list[AgentEvent]:
        events = self.proto.receive(await self.sock.receive())
        replies = self.proto.data_to_send()
        if replies:  # Settings, or built-in function answers: before the bridge acts
            await self.sock.send(*replies)
        for ev in events:
            if isinstance(ev, Transcript) and ev.text:
                self.history.append(ev)
        return events

    async def aclose(self) -> None:
        await self.sock.aclose()


class DeepgramProvider:
    """``[agent] provider = "deepgram"``; one instance per call (it keeps that call's history)."""

    name = "deepgram"

    def __init__(self, config: Config) -> None:
        cfg = config.agent.deepgram
        self.url = cfg.url
        self.settings = DeepgramSettings(agent=cfg.agent, listen_model=cfg.listen_model,
                                         think_provider=cfg.think_provider, think_model=cfg.think_model,
                                         speak_model=cfg.speak_model, prompt=cfg.prompt,
                                         # [agent.deepgram] greeting, else the bridge-wide [agent] greeting
                                         greeting=cfg.greeting or config.agent.greeting)
        self._api_key = cfg.api_key  # a SecretStr until the header is built
        self.history: deque[Transcript] = deque(maxlen=HISTORY_TURNS)
        self.keepalive_s = KEEPALIVE_INTERVAL_S

    async def connect(self, call: CallInfo, nursery: trio.Nursery) -> DeepgramSession:
        key = self._api_key.get_secret_value()
        if not key:
            raise AgentFailed("deepgram: no API key configured")
        sock = await AgentSocket.open(nursery, self.url, {"Authorization": f"Token {key}"}, "deepgram")
        session = DeepgramSession(sock, DeepgramConnection(self.settings, call.tools, self.history), self.history)
        try:
            await session.handshake()
        except BaseException:
            with trio.CancelScope(shield=True):
                await sock.aclose()
            raise
        nursery.start_soon(session.keepalive, self.keepalive_s)
        log.info("agent.deepgram.session_ready", stored_agent=bool(self.settings.agent),
                 history_turns=len(self.history), tools=len(call.tools))
        return session
