"""The VAPI provider: ``POST /call`` with the ``vapi.websocket`` transport, then its socket.

Thin I/O around :mod:`twibridge.agents.vapi_protocol` (which holds the rules).

* ``connect``: ``POST {base_url}/call`` (bearer key, httpx — it runs on Trio)
  then the returned ``websocketCallUrl``, both inside the supervisor's
  connect timeout.  A refusal (bad key, unknown assistant) is
  :class:`AgentFailed`; 5xx, timeouts and network errors are
  :class:`AgentDisconnected` (the supervisor retries: a VAPI call id cannot
  be reused, so every reconnect is a new ``/call``).
* The socket lives in one task in the supervisor's nursery (``connect_ws`` is
  a context manager, ``connect`` must return): it hands the connection back
  through ``nursery.start`` and, however it ends — :meth:`VapiSession.aclose`
  or the nursery being cancelled — says ``end-call`` before closing, so an
  abandoned VAPI call stops (and stops billing) at once.
* ``interrupt`` sends nothing: VAPI tracks its own playout.
* Secrets: the key goes only into the ``Authorization`` header and the
  ``websocketCallUrl`` (and the call id inside it) only to ``connect_ws``;
  neither is logged nor put into an exception message.
* Reconnects keep context: the provider is made per call, so it remembers
  the last final transcripts and hands them to the new VAPI call as a
  system message (without making it speak), and the new assistant waits for
  the caller instead of greeting again.
"""

from __future__ import annotations

import math
from collections import deque
from contextlib import AsyncExitStack
from typing import Any, Mapping

import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

from twibridge.agents import vapi_protocol as vp
from twibridge.agents.base import (
    MAX_AGENT_MESSAGE_BYTES,
    AgentDisconnected, AgentEvent, AgentNotice, AgentProtocolError, CallInfo, HangupRequest, Transcript, TransferRequest,
)
from twibridge.config import Config
from twibridge.logs import get_logger
from twibridge.agents.wsclient import connect_ws

log = get_logger("twibridge.agent.vapi")

#: How long the goodbye (``end-call``) and then the close handshake may take.
GOODBYE_TIMEOUT_S = 1.0
CLOSE_TIMEOUT_S = 2.0
#: Final transcript lines kept per call to brief a reconnected assistant.
HISTORY_LINES = 20
HISTORY_LINE_CHARS = 500


class VapiSession:
    """One VAPI socket for one call (see :class:`~twibridge.agents.base.AgentSession`)."""

    def __init__(self, stream: vp.VapiStream, history: deque[tuple[str, str]]) -> None:
        self.stream = stream
        self._history = history
        self._ws: WebSocketConnection | None = None
        self._pending: deque[AgentEvent] = deque()
        self._close_requested = trio.Event()
        self._finished = trio.Event()
        self._life: trio.CancelScope | None = None

    async def run(self, url: str, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the socket for its whole life (started with ``nursery.start``).

        The life runs shielded: were it cancelled with the nursery, trio-websocket's
        reader would die first and the close handshake would sit out its whole
        timeout (the supervisor cancels the nursery *before* ``aclose``, and the
        Twilio side of the call closes only after this).  :meth:`watch`, in the
        same nursery, turns that cancellation into "say goodbye and close now".
        The handshake keeps the caller's deadline (the supervisor's connect
        timeout) and is abandoned if the nursery is cancelled meanwhile.

        Raises (before ``started``):
            AgentDisconnected: TCP/TLS or the upgrade failed or timed out (no URL in the message).
        """
        try:
            with trio.CancelScope(shield=True, deadline=trio.current_effective_deadline()) as life:
                self._life = life
                if self._close_requested.is_set():
                    return
                async with AsyncExitStack() as stack:
                    try:
                        ws = await stack.enter_async_context(connect_ws(
                            url, close_timeout=CLOSE_TIMEOUT_S, max_message_size=MAX_AGENT_MESSAGE_BYTES))
                    except HandshakeError as exc:
                        status = getattr(exc, "status_code", None)
                        raise AgentDisconnected(f"vapi websocket refused the upgrade (HTTP {status})"
                                                if status else "vapi websocket handshake failed") from None
                    except (ConnectionClosed, trio.BrokenResourceError):
                        raise AgentDisconnected("vapi websocket closed during the handshake") from None
                    except ValueError:
                        raise AgentProtocolError("vapi websocketCallUrl is not a usable URL") from None
                    except OSError as exc:
                        raise AgentDisconnected(f"vapi websocket connect failed ({exc.__class__.__name__}"
                                                f"{f', errno {exc.errno}' if exc.errno else ''})") from None
                    life.deadline = math.inf
                    self._ws = ws
                    task_status.started()
                    await self._close_requested.wait()
                    # End VAPI's call (and its billing) before the close frame.
                    with trio.move_on_after(GOODBYE_TIMEOUT_S):
                        try:
                            await ws.send_message(vp.end_call_message())
                        except ConnectionClosed:
                            pass
            if self._ws is None:
                # Abandoned: a cancelled caller gets Cancelled (a timeout then
                # becomes the supervisor's "connect timed out"), not a failure.
                await trio.lowlevel.checkpoint()
                raise AgentDisconnected("vapi websocket handshake abandoned")
        finally:
            self._finished.set()

    async def watch(self) -> None:
        """Lives in the session's nursery: its cancellation ends the shielded socket life."""
        try:
            await self._finished.wait()
        finally:
            self._close_requested.set()
            if self._ws is None and self._life is not None:
                self._life.cancel()  # still connecting: abandon the handshake

    # -- AgentSession ------------------------------------------------------------------

    async def _send(self, data: str | bytes) -> None:
        assert self._ws is not None
        try:
            await self._ws.send_message(data)
        except ConnectionClosed as exc:
            raise AgentDisconnected(f"vapi websocket closed ({_close_code(exc)})") from None

    async def send_audio(self, ulaw: bytes) -> None:
        await self._send(ulaw)

    async def send_dtmf(self, digit: str) -> None:
        # The websocket transport has no keypad input: tell the model, quietly
        # (a response per key would talk over someone typing a number).
        await self._send(vp.add_message("system", f"The caller pressed the phone key {digit[:1]!r}."))

    async def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        # Nothing to send (VAPI tracks its own playout); later audio is a new item.
        self.stream.interrupted_locally()

    async def mark_played(self, item_id: str, played_ms: int) -> None:
        return None

    async def prompt(self, instruction: str) -> bool:
        # The websocket transport takes no "say this now" from us; VAPI's own
        # idle check-ins are the assistant's messagePlan.idleMessages.
        return False

    async def send_tool_result(self, call_id: str, name: str, output: Mapping[str, Any]) -> None:
        return None  # no configured functions yet: tools are the executor's (issue #17)

    async def receive(self) -> AgentEvent:
        assert self._ws is not None
        while not self._pending:
            try:
                msg = await self._ws.get_message()
            except ConnectionClosed as exc:
                raise AgentDisconnected(f"vapi websocket closed ({_close_code(exc)})") from None
            if isinstance(msg, bytes):
                self._pending.extend(self.stream.audio(msg))
                continue
            events = self.stream.text(msg)
            for ev in events:
                self._note(ev)
            self._pending.extend(events)
        return self._pending.popleft()

    def _note(self, ev: AgentEvent) -> None:
        if isinstance(ev, Transcript):
            self._history.append((ev.role, ev.text[:HISTORY_LINE_CHARS]))
        elif isinstance(ev, AgentNotice) and ev.code == "vapi.hang":
            log.warning("agent.vapi.hang", hangs=self.stream.hangs, in_a_row=self.stream.consecutive_hangs)
        elif isinstance(ev, (HangupRequest, TransferRequest, AgentNotice)):
            log.info("agent.vapi.event", kind=type(ev).__name__, detail=_describe(ev))

    async def aclose(self) -> None:
        """Say ``end-call`` and close; the caller bounds this (the supervisor does)."""
        self._close_requested.set()
        await self._finished.wait()


class VapiProvider:
    """``[agent.vapi]``: one instance per call (``Runtime.provider()``), so it can
    carry the conversation across reconnects."""

    name = "vapi"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.vapi = config.agent.vapi
        self.connects = 0
        self._history: deque[tuple[str, str]] = deque(maxlen=HISTORY_LINES)
        self._history_call = ""

    async def connect(self, call: CallInfo, nursery: trio.Nursery) -> VapiSession:
        if call.call_sid != self._history_call:  # never brief one caller with another's words
            self._history.clear()
            self._history_call = call.call_sid
        reconnect = self.connects > 0
        self.connects += 1
        vcall = await self._create_call(call, reconnect=reconnect)
        session = VapiSession(vp.VapiStream(), self._history)
        nursery.start_soon(session.watch)
        await nursery.start(session.run, vcall.websocket_url)
        log.info("agent.vapi.connected", reconnect=reconnect)
        if reconnect and self._history:
            lines = "\n".join(f"{role}: {text}" for role, text in self._history)
            await session._send(vp.add_message(
                "system", "The line to you dropped and was reconnected mid-call. The conversation so far:\n"
                + lines + "\nContinue from there; do not greet the caller again."))
        return session

    async def _create_call(self, call: CallInfo, *, reconnect: bool) -> vp.VapiCall:
        body = vp.build_create_call(self.vapi.assistant_id, self.vapi.assistant or None, call, reconnect=reconnect)
        headers = {"Authorization": f"Bearer {self.vapi.api_key.get_secret_value()}"}
        url = self.vapi.base_url.rstrip("/") + vp.CALL_PATH
        timeout = self.config.agent.connect_timeout_s
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                resp = await client.post(url, json=body, headers=headers)
        except httpx.TimeoutException:
            raise AgentDisconnected(f"vapi /call timed out after {timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise AgentDisconnected(f"vapi /call failed: {exc.__class__.__name__}") from None
        vcall = vp.parse_create_call(resp.status_code, resp.content)
        log.info("agent.vapi.call_created", http_status=resp.status_code, reconnect=reconnect)
        return vcall


def _close_code(exc: ConnectionClosed) -> str:
    reason: Any = getattr(exc, "reason", None)
    code = getattr(reason, "code", None)
    return f"code {code}" if code is not None else "no close code"


def _describe(ev: AgentEvent) -> str:
    """A short, secret-free description of a control event for the logs."""
    for attr in ("reason", "to", "message", "role"):
        value = getattr(ev, attr, None)
        if value:
            return str(value)[:120]
    return ""
