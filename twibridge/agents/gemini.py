"""The ``gemini`` provider: the Gemini Live API over its BidiGenerateContent WebSocket.

Thin I/O around :mod:`twibridge.agents.gemini_protocol` (which also owns
the transcoding): connect with the key in the ``x-goog-api-key`` header
(never in the URL, so never in a log line), send ``setup``, wait for
``setupComplete``, then pump.

Gemini has no error event: a refused key or setup arrives as a close code.
1007 (invalid payload) and 1008 (policy: bad key, unknown model, permission)
cannot be fixed by retrying → :class:`AgentFailed` (the supervisor falls back
or fails over at once); anything else (1011, a dropped TCP stream, the ~10
minute connection limit) → :class:`AgentDisconnected`, and the reconnect
resumes the conversation: the provider, which lives as long as the call,
keeps the latest session-resumption handle.  A fresh session without one
(the handle was refused, or this is a failover onto Gemini) is seeded with
the transcripts as client turns instead.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping

import trio

from twibridge.agents.base import AgentDisconnected, AgentEvent, AgentFailed, CallInfo, SessionDefaults, Transcript
from twibridge.agents.gemini_protocol import GeminiConnection, GoAway, build_history, build_setup
from twibridge.agents.websocket import AgentSocket
from twibridge.config import Config
from twibridge.logs import get_logger

log = get_logger("twibridge.agent")

HISTORY_TURNS = 40
#: Close codes that mean "this key / setup will never work".
FATAL_CLOSE_CODES = frozenset({1007, 1008})


class GeminiSession(SessionDefaults):
    """One Live API connection for one call."""

    # send_dtmf, mark_played, prompt: SessionDefaults (the Live API has no DTMF input).

    #: Any length of audio per message: when frames are waiting, send up to 100 ms in one.
    audio_batch_frames = 5

    def __init__(self, sock: AgentSocket, proto: GeminiConnection, provider: GeminiProvider) -> None:
        self.sock, self.proto, self.provider = sock, proto, provider
        self._pending: deque[AgentEvent] = deque()

    async def handshake(self, setup: str) -> None:
        try:
            await self.sock.send(setup)
            while not self.proto.ready:
                self._pending.extend(await self._next())
        except AgentDisconnected as exc:
            raise self._close_error(exc) from None

    def _close_error(self, exc: AgentDisconnected) -> AgentDisconnected | AgentFailed:
        """A close code that no retry can fix is :class:`AgentFailed`."""
        closed = self.sock.ws.closed
        if closed is not None and closed.code in FATAL_CLOSE_CODES:
            return AgentFailed(f"gemini refused the session (close {closed.code}: {closed.reason or 'no reason'})")
        return exc

    async def send_audio(self, ulaw: bytes) -> None:
        await self.sock.send(self.proto.audio_message(ulaw))

    async def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        self.proto.interrupt()

    async def send_tool_result(self, call_id: str, name: str, output: Mapping[str, Any]) -> None:
        message = self.proto.tool_result(call_id, name, output)
        if message is None:
            log.info("agent.gemini.tool_result_dropped", call_id=call_id, name=name,
                     cancelled=call_id in self.proto.cancelled)
            return
        await self.sock.send(message)

    async def receive(self) -> AgentEvent:
        while not self._pending:
            if self.proto.resume_now:
                raise GoAway("gemini announced goAway: resuming on a new connection")
            self._pending.extend(await self._next())
        return self._pending.popleft()

    async def _next(self) -> list[AgentEvent]:
        try:
            raw = await self.sock.receive()
        except AgentDisconnected as exc:
            error = self._close_error(exc)
            if error is exc:
                raise
            raise error from None
        events = self.proto.receive(raw)
        replies = self.proto.data_to_send()
        if replies:  # built-in function answers, before the bridge acts
            await self.sock.send(*replies)
        if self.proto.handle:
            self.provider.handle = self.proto.handle
        for ev in events:
            if isinstance(ev, Transcript) and ev.text:
                self.provider.history.append(ev)
        return events

    async def aclose(self) -> None:
        await self.sock.aclose()


class GeminiProvider:
    """``[agent] provider = "gemini"``; one instance per call (its resumption handle and history)."""

    name = "gemini"

    def __init__(self, config: Config) -> None:
        cfg = config.agent.gemini
        self.url, self.model, self.voice, self.instructions = cfg.url, cfg.model, cfg.voice, cfg.instructions
        self._api_key = cfg.api_key
        self.handle: str | None = None
        self.history: deque[Transcript] = deque(maxlen=HISTORY_TURNS)

    async def connect(self, call: CallInfo, nursery: trio.Nursery) -> GeminiSession:
        key = self._api_key.get_secret_value()
        if not key:
            raise AgentFailed("gemini: no API key configured")
        handle = self.handle
        sock = await AgentSocket.open(nursery, self.url, {"x-goog-api-key": key}, "gemini")
        session = GeminiSession(sock, GeminiConnection(), self)
        try:
            await session.handshake(build_setup(self.model, self.voice, self.instructions, call.tools, handle))
            seed = None if handle else build_history(self.history)
            if seed is not None:
                await sock.send(seed)
        except (AgentDisconnected, AgentFailed) as exc:
            with trio.CancelScope(shield=True):
                await sock.aclose()
            if handle is None:
                raise
            self.handle = None  # refused or expired: the next attempt starts afresh, seeded with the history
            raise AgentDisconnected(f"gemini did not resume the session: {exc}") from None
        except BaseException:
            with trio.CancelScope(shield=True):
                await sock.aclose()
            raise
        log.info("agent.gemini.session_ready", model=self.model, resumed=handle is not None,
                 history_turns=0 if handle else len(self.history), tools=len(call.tools))
        return session
