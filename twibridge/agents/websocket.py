"""The ``websocket`` provider: a self-hosted agent speaking twibridge protocol v1.

Thin I/O around :mod:`twibridge.agents.websocket_protocol` (spec:
``docs/agent-protocol.md``).  Also home of :class:`AgentSocket`, the client
WebSocket every WebSocket provider uses (OpenAI too), because the awkward
part is the same for all of them: ``connect_ws`` is a context manager, but
``AgentProvider.connect`` must *return* a session whose background work
lives in the supervisor's nursery.  So a task in that nursery enters
``connect_ws`` and hands the connection back through ``nursery.start`` (the
handshake stays under the supervisor's connect timeout); it then holds the
socket open, shielded, until :meth:`AgentSocket.aclose` has said goodbye,
because the supervisor cancels the nursery *before* closing the session.  A
watchdog task ends the socket anyway, bounded, if nobody closes it.  The TCP
stream is always closed (``connect_ws`` owns it).

Nothing here may raise into the supervisor's nursery (that would end the
call): a broken keepalive cancels the pending :meth:`AgentSocket.receive`,
which raises :class:`AgentDisconnected` like any other drop.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, WebSocketConnection

from twibridge.agents.base import (
    MAX_AGENT_MESSAGE_BYTES, AgentDisconnected, AgentEvent, AgentFailed, CallInfo, Transcript,
)
from twibridge.agents.websocket_protocol import (
    AgentConnection, build_dtmf, build_mark, build_prompt, build_start, build_stop, build_tool_result,
    build_transfer_failed,
)
from twibridge import locks
from twibridge.config import Config
from twibridge.logs import get_logger
from twibridge.agents.wsclient import connect_ws
from twibridge.agents.wsfast import fast_writer

log = get_logger("twibridge.agent")

#: WS ping cadence and patience (the protocol's keepalive; audio alone does
#: not prove the agent is alive, e.g. a hung process behind a live proxy).
PING_INTERVAL_S = 15.0
PONG_TIMEOUT_S = 10.0
#: Bound on our close handshake (the supervisor also bounds ``aclose``).
CLOSE_TIMEOUT_S = 2.0
#: …when the peer stopped answering (enough to send our close frame).
NO_REPLY_CLOSE_TIMEOUT_S = 0.1
#: Longest one message may take to reach the socket (an agent that stopped reading).
SEND_TIMEOUT_S = 2.0
#: HTTP statuses at the upgrade that a retry may fix; every other 4xx is final.
RETRYABLE_4XX = frozenset({408, 425, 429})


def rejection_error(label: str, status: int) -> AgentFailed | AgentDisconnected:
    """Map an HTTP status refusing the upgrade to "fall back now" or "retry"."""
    if status in (401, 403):
        return AgentFailed(f"{label} refused the credentials (HTTP {status})")
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        return AgentFailed(f"{label} refused the connection (HTTP {status})")
    return AgentDisconnected(f"{label} refused the connection (HTTP {status})")


def _single(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class AgentSocket:
    """One client WebSocket to an agent; see the module docstring for its life."""

    def __init__(self, ws: WebSocketConnection, label: str, scope: trio.CancelScope) -> None:
        self.ws = ws
        self.label = label
        self._scope = scope  # the holder's: cancelling it closes the socket and its stream
        self._done = trio.Event()
        self._send_lock = trio.Lock()  # multi-message sequences (cancel + truncate) stay together
        self._broken: str | None = None
        self._closing = False
        self._receive_scope: trio.CancelScope | None = None
        self._fast = fast_writer(ws)  # whole frames straight to a plain TCP socket (agents/wsfast.py)

    @classmethod
    async def open(cls, nursery: trio.Nursery, url: str, headers: Mapping[str, str], label: str) -> AgentSocket:
        """Connect (bounded by the caller's cancel scope); the socket lives in ``nursery``.

        Raises:
            AgentFailed: the URL is unusable, or the upgrade was refused for good (401/403/4xx).
            AgentDisconnected: network error, 5xx/429, or a broken handshake.
        """
        try:
            sock: AgentSocket = await nursery.start(cls._hold, url, dict(headers), label)
        except Exception as exc:
            inner = _single(exc)
            if isinstance(inner, ConnectionRejected):
                raise rejection_error(label, inner.status_code) from None
            if isinstance(inner, HandshakeError):
                raise AgentDisconnected(f"{label}: WebSocket handshake failed ({inner.__class__.__name__})") from None
            if isinstance(inner, OSError):
                raise AgentDisconnected(f"{label}: cannot connect: {inner}") from None
            if isinstance(inner, ValueError):
                raise AgentFailed(f"{label}: bad URL: {inner}") from None
            raise
        nursery.start_soon(sock._watchdog)
        return sock

    @classmethod
    async def _hold(cls, url: str, headers: dict[str, str], label: str,
                    task_status: trio.TaskStatus[AgentSocket] = trio.TASK_STATUS_IGNORED) -> None:
        """Enter ``connect_ws`` and keep it open until :meth:`aclose` (or the watchdog) says so.

        The handshake is cancellable by the caller's deadline.  After it the
        scope is shielded: the supervisor cancels the connection's nursery
        *before* calling :meth:`aclose`, and trio-websocket's reader task
        (inside ``connect_ws``) must outlive that to complete the close
        handshake; otherwise the goodbye is lost and the close waits in vain.
        """
        started = False
        try:
            with trio.CancelScope() as scope:
                async with connect_ws(url, headers, close_timeout=CLOSE_TIMEOUT_S,
                                      max_message_size=MAX_AGENT_MESSAGE_BYTES) as ws:
                    sock = cls(ws, label, scope)
                    scope.shield = True
                    task_status.started(sock)
                    started = True
                    await trio.sleep_forever()
        except Exception as exc:
            if not started:
                raise
            # Closing failed oddly; the stream is closed regardless.  Never
            # let it reach the supervisor's nursery.
            log.debug("agent.socket_close_error", agent=label, error=exc.__class__.__name__)

    async def _watchdog(self) -> None:
        """Unshielded twin of the holder: when the nursery is cancelled, give
        :meth:`aclose` a bounded moment, then end the socket regardless."""
        try:
            await self._done.wait()
        finally:
            with trio.move_on_after(CLOSE_TIMEOUT_S + NO_REPLY_CLOSE_TIMEOUT_S, shield=True):
                await self._done.wait()
            self._scope.cancel(reason="agent socket closed")

    async def send(self, *messages: str | bytes) -> None:
        """Send in order, atomically with respect to other senders.

        Each message is sent whole (:meth:`_send_whole`); a cancel lands only
        before or between messages.
        """
        if self._broken is not None:
            raise AgentDisconnected(f"{self.label}: {self._broken}")
        lock = self._send_lock
        # Uncontended nearly always (50 audio frames a second, one sender):
        # no trip through the scheduler (the send itself yields anyway).
        await locks.acquire(lock)
        try:
            if self._closing:  # checked under the lock: nothing may follow the goodbye (e.g. ``stop``)
                raise AgentDisconnected(f"{self.label}: session closed")
            for i, message in enumerate(messages):
                if i:
                    await trio.lowlevel.checkpoint_if_cancelled()
                await self._send_whole(message)
        finally:
            lock.release()

    async def _send_whole(self, message: str | bytes) -> None:
        """One message, encoded and written together: shielded, bounded.

        trio-websocket encodes a message (wsproto: framing, masking, any
        compression state) *before* it waits for the stream's lock and the
        socket; a cancel there would lose a frame the connection already
        counted.  So the cancel waits until the frame is written, at most
        ``SEND_TIMEOUT_S``; a socket that takes nothing for that long is
        broken (a frame may be half-written): nothing more is sent on it.
        Over plain TCP a frame the kernel takes at once skips all that (no
        yield, so no cancel can land; ~150 → ~30 µs per caller frame,
        ``bench/sendcost.py``): see :mod:`twibridge.agents.wsfast`.
        """
        fast = self._fast
        left = fast.try_write(message) if fast is not None else None
        if left == 0:  # written whole, nothing yielded: no cancel could land
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        with trio.move_on_after(SEND_TIMEOUT_S, shield=True) as scope:
            try:
                if fast is not None and left is not None:
                    await fast.finish()  # the tail the kernel did not take at once
                else:
                    await self.ws.send_message(message)
            except ConnectionClosed as exc:
                raise AgentDisconnected(self._closed(exc)) from None
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._break("connection lost")
                raise AgentDisconnected(f"{self.label}: {self._broken}") from None
        if scope.cancelled_caught:
            self._break(f"a send took over {SEND_TIMEOUT_S:g}s")
            raise AgentDisconnected(f"{self.label}: {self._broken}")

    def _break(self, reason: str) -> None:
        """The socket is unusable: fail sends at once and wake the pending receive."""
        self._broken = reason
        if self._receive_scope is not None:
            self._receive_scope.cancel(reason=reason)

    async def receive(self) -> str | bytes:
        """The next message.  Raises :class:`AgentDisconnected` once the connection is over."""
        if self._broken is None:
            with trio.CancelScope() as scope:
                self._receive_scope = scope
                try:
                    return await self.ws.get_message()
                except ConnectionClosed as exc:
                    raise AgentDisconnected(self._closed(exc)) from None
                finally:
                    self._receive_scope = None
        raise AgentDisconnected(f"{self.label}: {self._broken}")

    def _closed(self, exc: ConnectionClosed) -> str:
        reason = exc.reason
        if reason is None:
            return f"{self.label} closed the connection"
        text = f" ({reason.reason})" if reason.reason else ""
        return f"{self.label} closed the connection: code {reason.code}{text}"

    async def keepalive(self, interval_s: float = PING_INTERVAL_S, timeout_s: float = PONG_TIMEOUT_S) -> None:
        """Ping every ``interval_s``; no pong within ``timeout_s`` breaks the socket."""
        while True:
            await trio.sleep(interval_s)
            with trio.move_on_after(timeout_s) as scope:
                try:
                    await self.ws.ping()
                except ConnectionClosed:
                    return  # receive() reports the close
            if scope.cancelled_caught:
                self._break(f"no pong within {timeout_s:g}s")
                return

    async def aclose(self, final: str | None = None, code: int = 1000) -> None:
        """Send ``final`` (best effort), close the WebSocket, release the holder task.

        A peer that stopped answering pings will not answer a close either:
        that wait is cut short (a cancelled close still closes the stream).
        """
        try:
            with trio.move_on_after(CLOSE_TIMEOUT_S if self._broken is None else NO_REPLY_CLOSE_TIMEOUT_S):
                async with self._send_lock:
                    self._closing = True
                    if final is not None and self._broken is None:
                        try:
                            await self._send_whole(final)
                        except AgentDisconnected:
                            pass
                await self.ws.aclose(code)
        finally:
            self._done.set()
            self._scope.cancel(reason="agent socket closed")


class WebsocketSession:
    """One call's connection to a self-hosted agent."""

    def __init__(self, sock: AgentSocket) -> None:
        self.sock = sock
        self.proto = AgentConnection()
        self._pending: deque[AgentEvent] = deque()

    async def send_audio(self, ulaw: bytes) -> None:
        await self.sock.send(ulaw)

    async def send_dtmf(self, digit: str) -> None:
        await self.sock.send(build_dtmf(digit))

    async def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        await self.sock.send(self.proto.interrupt(item_id, heard_ms))

    async def mark_played(self, item_id: str, played_ms: int) -> None:
        await self.sock.send(build_mark(item_id, played_ms))

    async def transfer_failed(self, reason: str) -> None:
        await self.sock.send(build_transfer_failed(reason))
    async def prompt(self, instruction: str) -> bool:
        await self.sock.send(build_prompt(instruction))
        return True

    async def send_tool_result(self, call_id: str, name: str, output: Mapping[str, Any]) -> None:
        await self.sock.send(build_tool_result(call_id, name, output))

    async def receive(self) -> AgentEvent:
        # One message yields at most one event, so _pending stays tiny.
        while not self._pending:
            self._pending.extend(self.proto.receive(await self.sock.receive()))
        return self._pending.popleft()

    async def aclose(self) -> None:
        await self.sock.aclose(final=build_stop())


class WebsocketProvider:
    """``[agent] provider = "websocket"``: dial ``[agent.websocket] url`` with its headers."""

    name = "websocket"

    def __init__(self, config: Config) -> None:
        self.url = config.agent.websocket.url
        # Header values are secrets (tokens): only ever handed to the socket.
        self._headers = {k: v.get_secret_value() for k, v in config.agent.websocket.headers.items()}
        self.ping_interval_s = PING_INTERVAL_S
        self.pong_timeout_s = PONG_TIMEOUT_S
        #: The conversation so far when the call failed over to this agent (``start.history``).
        self.history: deque[Transcript] = deque(maxlen=40)

    async def connect(self, call: CallInfo, nursery: trio.Nursery) -> WebsocketSession:
        sock = await AgentSocket.open(nursery, self.url, self._headers, "agent")
        try:
            await sock.send(build_start(call, self.history))
        except BaseException:
            with trio.CancelScope(shield=True):
                await sock.aclose()
            raise
        nursery.start_soon(sock.keepalive, self.ping_interval_s, self.pong_timeout_s)
        return WebsocketSession(sock)
