"""The ``elevenlabs`` provider: ElevenLabs Agents over a WebSocket.

Thin I/O around :mod:`twibridge.agents.elevenlabs_protocol`:

* with ``[agent.elevenlabs] api_key`` (private agents), a signed URL is
  fetched for every connection just before connecting (``GET
  {api_base_url}/v1/convai/conversation/get-signed-url?agent_id=…``, header
  ``xi-api-key``): it expires and may be single-use, so it is never cached,
  and it is a credential, so it is never logged.  Without a key, the public
  ``{url}?agent_id=…``.  A refused key (401/403) or an unknown agent (404)
  is :class:`AgentFailed` at once; 429/5xx and network errors may be retried.
* ``conversation_initiation_client_data`` first; the call starts only after
  ``conversation_initiation_metadata`` confirmed μ-law 8 kHz both ways.
* after a reconnect (or a failover onto ElevenLabs) the conversation so far
  goes in as one ``contextual_update``: an ElevenLabs conversation cannot be
  resumed, but the agent can be told what was said.
* a server close 1000 that we did not ask for is how ElevenLabs ends a
  conversation after its ``end_call`` tool: that is a
  :class:`HangupRequest` (the bridge lets the goodbye play, then hangs up),
  not a drop to reconnect.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Mapping
from urllib.parse import urlencode, urlsplit

import httpx
import trio

from twibridge.agents.base import (
    AgentDisconnected, AgentEvent, AgentFailed, AgentProtocolError, CallInfo, HangupRequest, SessionDefaults,
    Transcript,
)
from twibridge.agents.elevenlabs_protocol import (
    ElevenLabsConnection, build_audio_chunk, build_contextual_update, build_initiation,
)
from twibridge.agents.websocket import AgentSocket
from twibridge.config import Config
from twibridge.logs import get_logger

log = get_logger("twibridge.agent")

HISTORY_TURNS = 40
SIGNED_URL_PATH = "/v1/convai/conversation/get-signed-url"


def public_url(base: str, agent_id: str) -> str:
    sep = "&" if urlsplit(base).query else "?"
    return f"{base}{sep}{urlencode({'agent_id': agent_id})}"


class ElevenLabsSession(SessionDefaults):
    """One conversation for one call."""

    # send_dtmf, mark_played, prompt: SessionDefaults (no DTMF input on the conversation socket).

    #: A chunk takes any length: when frames are waiting, send up to 100 ms in one.
    audio_batch_frames = 5

    def __init__(self, sock: AgentSocket, proto: ElevenLabsConnection, history: deque[Transcript]) -> None:
        self.sock, self.proto, self.history = sock, proto, history
        self._pending: deque[AgentEvent] = deque()
        self._hung_up = False
        self._closing = False  # our own close (a 1000 from it is no agent hang-up)

    async def handshake(self, call: CallInfo) -> None:
        try:
            await self.sock.send(build_initiation(call))
            while not self.proto.ready:
                self._pending.extend(await self._next())
        except AgentDisconnected:
            closed = self.sock.ws.closed
            if closed is not None and closed.code == 1008:
                # A policy close before the conversation starts: unknown agent, bad or used signature.
                raise AgentFailed(f"elevenlabs refused the conversation (close 1008: {closed.reason or 'no reason'})"
                                  ) from None
            raise
        update = build_contextual_update(self.history)
        if update is not None:
            await self.sock.send(update)

    async def send_audio(self, ulaw: bytes) -> None:
        await self.sock.send(build_audio_chunk(ulaw))

    async def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        self.proto.interrupt()

    async def send_tool_result(self, call_id: str, name: str, output: Mapping[str, Any]) -> None:
        message = self.proto.tool_result(call_id, output)
        if message is not None:
            await self.sock.send(message)

    async def receive(self) -> AgentEvent:
        while not self._pending:
            if self._hung_up:
                await trio.sleep_forever()  # the call is ending on our HangupRequest
            self._pending.extend(await self._next())
        return self._pending.popleft()

    async def _next(self) -> list[AgentEvent]:
        try:
            raw = await self.sock.receive()
        except AgentDisconnected:
            closed = self.sock.ws.closed
            if self.proto.ready and closed is not None and closed.code == 1000 and not self._closing:
                self._hung_up = True
                log.info("agent.elevenlabs.agent_ended", conversation_id=self.proto.conversation_id)
                return [HangupRequest("elevenlabs: the agent ended the conversation")]
            raise
        events = self.proto.receive(raw)
        replies = self.proto.data_to_send()
        if replies:  # pongs and built-in tool answers
            await self.sock.send(*replies)
        for ev in events:
            if isinstance(ev, Transcript) and ev.text:
                self.history.append(ev)
        return events

    async def aclose(self) -> None:
        self._closing = True
        await self.sock.aclose()


class ElevenLabsProvider:
    """``[agent] provider = "elevenlabs"``; one instance per call (it keeps that call's history)."""

    name = "elevenlabs"

    def __init__(self, config: Config) -> None:
        cfg = config.agent.elevenlabs
        self.agent_id, self.url, self.api_base_url = cfg.agent_id, cfg.url, cfg.api_base_url.rstrip("/")
        self._api_key = cfg.api_key
        self.timeout_s = config.agent.connect_timeout_s
        self.history: deque[Transcript] = deque(maxlen=HISTORY_TURNS)

    async def signed_url(self, key: str) -> str:
        """A fresh signed URL for a private agent (a credential: never logged)."""
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                resp = await client.get(self.api_base_url + SIGNED_URL_PATH, params={"agent_id": self.agent_id},
                                        headers={"xi-api-key": key})
        except httpx.TimeoutException:
            raise AgentDisconnected(f"elevenlabs signed URL request timed out after {self.timeout_s:g}s") from None
        except httpx.HTTPError as exc:
            raise AgentDisconnected(f"elevenlabs signed URL request failed: {exc.__class__.__name__}") from None
        status = resp.status_code
        if status in (401, 403):
            raise AgentFailed(f"elevenlabs refused the API key (HTTP {status})")
        if status in (404, 422):
            raise AgentFailed(f"elevenlabs does not know agent {self.agent_id} (HTTP {status})")
        if status != 200:
            raise AgentDisconnected(f"elevenlabs signed URL request failed (HTTP {status})")
        try:
            url = json.loads(resp.content)["signed_url"]
        except (ValueError, KeyError, TypeError):
            raise AgentProtocolError("elevenlabs: signed URL answer without 'signed_url'") from None
        if not isinstance(url, str) or urlsplit(url).scheme not in ("ws", "wss"):
            raise AgentProtocolError("elevenlabs: 'signed_url' is not a ws(s) URL")
        return url

    async def connect(self, call: CallInfo, nursery: trio.Nursery) -> ElevenLabsSession:
        key = self._api_key.get_secret_value()
        url = await self.signed_url(key) if key else public_url(self.url, self.agent_id)
        sock = await AgentSocket.open(nursery, url, {}, "elevenlabs")
        session = ElevenLabsSession(sock, ElevenLabsConnection(self.agent_id), self.history)
        try:
            await session.handshake(call)
        except BaseException:
            with trio.CancelScope(shield=True):
                await sock.aclose()
            raise
        log.info("agent.elevenlabs.session_ready", agent_id=self.agent_id, private=bool(key),
                 conversation_id=session.proto.conversation_id, history_turns=len(self.history))
        return session
