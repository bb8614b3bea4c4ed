"""Keeps one call's agent connection alive: connect, buffer, reconnect, give up.

Provider-independent, so every provider gets the same behaviour:

* connect under ``[agent] connect_timeout_s``;
* caller audio that arrives while (re)connecting is buffered, bounded by
  ``connect_buffer_ms``: beyond it the oldest frames are dropped and counted
  (the caller's latest words matter most), then flushed on connect;
* a dropped provider is reconnected with exponential backoff and full
  jitter, up to ``reconnect_attempts`` times in a row, keeping the call up;
* when it cannot (or the provider refuses outright, :class:`AgentFailed`),
  the call **fails over** to the next provider of ``[agent] failover`` (a
  fresh reconnect budget; the caller's audio keeps buffering meanwhile, so
  they hear at most a short gap), seeded with the conversation so far where
  that provider takes it (providers keeping a ``history`` deque of
  :class:`Transcript`\\ s: OpenAI/Azure conversation items, Deepgram
  ``agent.context.messages``, Gemini client turns, ElevenLabs
  ``contextual_update``, our protocol's ``start.history``).  Only when the
  list is exhausted does :meth:`run` raise :class:`AgentFailed`, and the
  call plays the fallback;
* a provider may end a connection on purpose and ask to resume at once
  (an :class:`AgentDisconnected` with ``planned = True``, e.g. Gemini's
  ``goAway``): reconnected without backoff and not counted as a failure.

:attr:`AgentSupervisor.served` names every provider that connected for the
call, :attr:`AgentSupervisor.failovers` every switch (the call summary and
``twibridge_agent_failovers_total{from,to}`` come from them).

The inbound audio path never waits on the provider: :meth:`push_audio` is
synchronous and only appends to the bounded buffer.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import replace
from typing import Any, Awaitable, Callable, Mapping, Sequence

import trio

from twibridge.agents.base import (
    AgentDisconnected, AgentEvent, AgentFailed, AgentProvider, AgentSession, CallInfo, Transcript,
)
from twibridge.config import AgentConfig
from twibridge.logs import get_logger

log = get_logger("twibridge.agent")

#: Turns of conversation the supervisor keeps to seed a failover provider.
FAILOVER_HISTORY_TURNS = 40


class AgentSupervisor:
    def __init__(
        self,
        provider: AgentProvider,
        call: CallInfo,
        config: AgentConfig,
        on_event: Callable[[AgentEvent], Awaitable[None]],
        failover: Sequence[AgentProvider] = (),
    ) -> None:
        self.provider = provider
        self._failover = list(failover)
        #: Providers that connected for this call, in order (a name once per stint).
        self.served: list[str] = []
        #: Every switch made: (from, to) provider names.
        self.failovers: list[tuple[str, str]] = []
        self.history: deque[Transcript] = deque(maxlen=FAILOVER_HISTORY_TURNS)
        self.call = call
        self.config = config
        self.on_event = on_event
        self.session: AgentSession | None = None
        self._audio: deque[bytes] = deque(maxlen=max(1, config.connect_buffer_ms // 20))
        self._audio_ready = trio.Event()
        self.dropped_frames = 0
        self.reconnects = 0
        self.connected = trio.Event()

    # -- called by the call's inbound path ---------------------------------

    def push_audio(self, frame: bytes) -> None:
        """Queue one caller frame for the agent; never blocks."""
        if len(self._audio) == self._audio.maxlen:
            self.dropped_frames += 1
        self._audio.append(frame)
        self._audio_ready.set()

    async def send_dtmf(self, digit: str) -> None:
        if self.session is not None:
            with trio.move_on_after(self.config.connect_timeout_s):
                await self._guard(self.session.send_dtmf(digit))

    async def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        if self.session is not None:
            with trio.move_on_after(self.config.connect_timeout_s):
                await self._guard(self.session.interrupt(item_id, heard_ms))

    async def send_tool_result(self, call_id: str, name: str, output: Mapping[str, Any]) -> None:
        """A tool's result for the session that asked (after a reconnect the new one may not know it)."""
        if self.session is not None:
            with trio.move_on_after(self.config.connect_timeout_s):
                await self._guard(self.session.send_tool_result(call_id, name, output))

    async def mark_played(self, item_id: str, played_ms: int) -> None:
        if self.session is not None:
            await self._guard(self.session.mark_played(item_id, played_ms))

    async def transfer_failed(self, reason: str) -> None:
        """Tell the agent its transfer did not happen (refused by ``[transfer]``, or failed).

        Optional for a session (``transfer_failed(reason)``): one without it is not told.
        """
        notify = getattr(self.session, "transfer_failed", None)
        if notify is not None:
            with trio.move_on_after(self.config.connect_timeout_s):
                await self._guard(notify(reason))
    async def prompt(self, instruction: str) -> bool:
        """Ask the agent to speak now; False when it cannot be asked (or is not connected)."""
        if self.session is None:
            return False
        with trio.move_on_after(self.config.connect_timeout_s):
            try:
                return await self.session.prompt(instruction)
            except AgentDisconnected:
                return False
        return False

    async def _guard(self, aw: Awaitable[None]) -> None:
        try:
            await aw
        except AgentDisconnected:
            pass  # the receive loop notices and reconnects

    # -- the supervisor task -------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until the call ends (cancelled) or no provider can serve it.

        Raises:
            AgentFailed: the last provider of the failover list failed too
                (connecting failed ``reconnect_attempts + 1`` times in a row,
                or it refused the call).
        """
        task_status.started()
        while True:
            try:
                await self._run_provider()
            except AgentFailed as exc:
                if not self._failover:
                    raise
                self._fail_over(str(exc))

    def _fail_over(self, reason: str) -> None:
        nxt = self._failover.pop(0)
        log.warning("agent.failover", from_provider=self.provider.name, to_provider=nxt.name, reason=reason,
                    history_turns=len(self.history))
        self.failovers.append((self.provider.name, nxt.name))
        history = getattr(nxt, "history", None)
        if isinstance(history, deque):  # the provider replays it into its first session
            history.extend(t for t in self.history if t not in history)
        self.provider = nxt

    async def _run_provider(self) -> None:
        """Keep one provider connected, reconnecting; raises :class:`AgentFailed` when it is beyond saving."""
        failures = 0
        while True:
            try:
                await self._one_connection()
                failures = 0  # the provider ended cleanly: reconnect at once
                log.info("agent.ended", provider=self.provider.name)
            except AgentDisconnected as exc:
                if getattr(exc, "planned", False):
                    log.info("agent.resuming", provider=self.provider.name, reason=str(exc))
                    failures = 0
                else:
                    failures += 1
                    log.warning("agent.disconnected", provider=self.provider.name, reason=str(exc),
                                attempt=failures)
            finally:
                self.session = None
            if failures > self.config.reconnect_attempts:
                raise AgentFailed(f"{self.provider.name}: gave up after {failures} failed attempts")
            if failures:
                cap = min(self.config.reconnect_backoff_max_s,
                          self.config.reconnect_backoff_s * 2 ** (failures - 1))
                await trio.sleep(random.uniform(0, cap))  # full jitter
            self.reconnects += 1

    async def _one_connection(self) -> None:
        """One provider connection, from connect to its end.

        Raises a bare :class:`AgentDisconnected`/:class:`AgentFailed` (not an
        exception group) so :meth:`run` can decide whether to reconnect.
        """
        try:
            await self._connection_nursery()
        except BaseExceptionGroup as group:
            leaves = list(_leaves(group))
            if all(isinstance(e, (AgentDisconnected, AgentFailed)) for e in leaves):
                failed = [e for e in leaves if isinstance(e, AgentFailed)]
                raise (failed or leaves)[0] from group
            raise

    async def _connection_nursery(self) -> None:
        async with trio.open_nursery() as nursery:
            try:
                # The greeting is for the first connection only: after a
                # reconnect the caller has heard it (or talked over it).
                call = self.call if not self.connected.is_set() else replace(self.call, greeting="")
                with trio.fail_after(self.config.connect_timeout_s):
                    session = await self.provider.connect(call, nursery)
            except trio.TooSlowError:
                raise AgentDisconnected(f"connect timed out after {self.config.connect_timeout_s:g}s") from None
            except OSError as exc:
                raise AgentDisconnected(f"connect failed: {exc.__class__.__name__}: {exc}") from None
            self.session = session
            self.connected.set()
            if not self.served or self.served[-1] != self.provider.name:
                self.served.append(self.provider.name)
            log.info("agent.connected", provider=self.provider.name)
            try:
                nursery.start_soon(self._audio_pump, session)
                while True:
                    event = await session.receive()
                    if isinstance(event, Transcript) and event.text:
                        self.history.append(event)
                    await self.on_event(event)
            finally:
                # Say goodbye first (bounded), while the session's reader can
                # still complete the close handshake; then cancel its tasks.
                # The other order makes every close wait out its timeout.
                with trio.move_on_after(self.config.connect_timeout_s, shield=True):
                    try:
                        await session.aclose()
                    except (AgentDisconnected, OSError):
                        pass
                nursery.cancel_scope.cancel(reason="agent connection over")

    async def _audio_pump(self, session: AgentSession) -> None:
        batch: int = getattr(session, "audio_batch_frames", 1)  # see AgentSession
        audio = self._audio
        while True:
            if not audio:
                self._audio_ready = trio.Event()
                await self._audio_ready.wait()
                continue
            frames = [audio.popleft() for _ in range(min(len(audio), batch))]
            try:
                await session.send_audio(frames[0] if len(frames) == 1 else b"".join(frames))
            except AgentDisconnected:
                audio.extendleft(reversed(frames))  # keep them for the next connection
                return


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
