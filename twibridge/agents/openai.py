"""The ``openai`` provider: OpenAI Realtime (GA) over a WebSocket.

Thin I/O around :mod:`twibridge.agents.openai_protocol`: connect to
``{url}?model={model}`` with ``Authorization: Bearer <key>`` (the key goes
into that header and nowhere else: never a URL, a log line or an error
message), send ``session.update``, wait for ``session.updated`` (so a
refused config fails the connect, where the supervisor falls back at once,
instead of mid-call), then pump.

Reconnects start empty (OpenAI has no resume), so the provider, which lives
as long as the call, keeps the last transcripts and seeds a fresh session
with them as conversation items.  Assistant transcripts always arrive;
caller transcripts only when input transcription is enabled
(:attr:`OpenAIProvider.transcribe_model`).
"""

from __future__ import annotations

from typing import Any, Mapping

from collections import deque
from urllib.parse import urlencode, urlsplit, urlunsplit

import trio
from pydantic import SecretStr

from twibridge.agents.base import AgentEvent, AgentFailed, CallInfo, HangupRequest, Transcript, TransferRequest
from twibridge.agents.openai_messages import build_audio_append, build_transfer_failed
from twibridge.agents.openai_protocol import RealtimeConnection
from twibridge.agents.websocket import AgentSocket
from twibridge.config import Config
from twibridge.logs import get_logger

log = get_logger("twibridge.agent")

#: Past turns replayed into a fresh session after a reconnect.
HISTORY_TURNS = 40


def realtime_url(base: str, model: str) -> str:
    """``base`` plus ``model=…`` in its query (kept if the URL already has one)."""
    parts = urlsplit(base)
    if "model=" in parts.query:
        return base
    query = "&".join(q for q in (parts.query, urlencode({"model": model})) if q)
    return urlunsplit(parts._replace(query=query))


class OpenAISession:
    """One Realtime connection for one call."""

    #: An append takes any length of audio: when frames are waiting, send up to 200 ms in one.
    audio_batch_frames = 10

    def __init__(self, sock: AgentSocket, proto: RealtimeConnection, history: deque[Transcript]) -> None:
        self.sock = sock
        self.proto = proto
        self.history = history
        self._pending: deque[AgentEvent] = deque()

    async def handshake(self, history: list[Transcript]) -> None:
        """``session.update`` (+ history), then wait for ``session.updated``.

        Events that arrive before it (none expected) are kept for :meth:`receive`.
        """
        await self.sock.send(*self.proto.start(history))
        while not self.proto.ready:
            self._pending.extend(await self._next())

    async def send_audio(self, ulaw: bytes) -> None:
        await self.sock.send(build_audio_append(ulaw))

    async def send_dtmf(self, digit: str) -> None:
        return None  # the Realtime API has no DTMF input

    async def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        messages = self.proto.interrupt(item_id, heard_ms)
        log.info("agent.openai.interrupt", item_id=item_id, heard_ms=heard_ms, truncate=len(messages) > 1)
        await self.sock.send(*messages)

    async def mark_played(self, item_id: str, played_ms: int) -> None:
        return None  # the heard position only matters at barge-in (interrupt)

    async def transfer_failed(self, reason: str) -> None:
        await self.sock.send(*build_transfer_failed(reason))
    async def prompt(self, instruction: str) -> bool:
        await self.sock.send(*self.proto.prompt(instruction))
        return True

    async def send_tool_result(self, call_id: str, name: str, output: Mapping[str, Any]) -> None:
        await self.sock.send(*self.proto.tool_result(call_id, dict(output)))

    async def receive(self) -> AgentEvent:
        while not self._pending:
            self._pending.extend(await self._next())
        return self._pending.popleft()

    async def _next(self) -> list[AgentEvent]:
        events = self.proto.receive(await self.sock.receive())
        replies = self.proto.data_to_send()
        if replies:
            # Answer the function call before the bridge acts on it (e.g. hangs up).
            await self.sock.send(*replies)
        for ev in events:
            if isinstance(ev, Transcript) and ev.text and not ev.truncated:
                self.history.append(ev)
            elif isinstance(ev, (HangupRequest, TransferRequest)):
                log.info("agent.openai.tool_call", request=type(ev).__name__)
        return events

    async def aclose(self) -> None:
        await self.sock.aclose()


class OpenAIProvider:
    """``[agent] provider = "openai"``; one instance per call (it keeps that call's history)."""

    name = "openai"
    #: e.g. "gpt-4o-mini-transcribe" to get caller transcripts (billed separately).
    transcribe_model: str | None = None

    def __init__(self, config: Config) -> None:
        cfg = config.agent.openai
        self._setup(cfg.url, cfg.model, cfg.voice, cfg.instructions, cfg.api_key)

    def _setup(self, url: str, model: str, voice: str, instructions: str, api_key: SecretStr) -> None:
        """Shared with the Azure flavour (``agents/azure_openai.py``): only URL, model and auth differ."""
        self.url = realtime_url(url, model)
        self.model, self.voice, self.instructions = model, voice, instructions
        self._api_key = api_key  # a SecretStr until the moment the header is built
        self.history: deque[Transcript] = deque(maxlen=HISTORY_TURNS)

    def auth_headers(self, key: str) -> dict[str, str]:
        """The upgrade's credential header (OpenAI: a bearer token)."""
        return {"Authorization": f"Bearer {key}"}

    async def connect(self, call: CallInfo, nursery: trio.Nursery) -> OpenAISession:
        key = self._api_key.get_secret_value()
        if not key:
            raise AgentFailed(f"{self.name}: no API key configured")
        sock = await AgentSocket.open(nursery, self.url, self.auth_headers(key), self.name)
        proto = RealtimeConnection(self.model, self.voice, self.instructions, transcribe_model=self.transcribe_model,
                                   tools=call.tools)
        session = OpenAISession(sock, proto, self.history)
        try:
            await session.handshake(list(self.history))
        except BaseException:
            with trio.CancelScope(shield=True):
                await sock.aclose()
            raise
        log.info("agent.openai.session_ready", provider=self.name, model=self.model, voice=self.voice, history_turns=len(self.history))
        greet = proto.greet(call.greeting)
        if greet:  # the agent speaks first: no dead air while server VAD waits for the caller
            await sock.send(*greet)
        return session
