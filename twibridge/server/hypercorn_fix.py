"""Guards for Hypercorn 0.18 (trio worker) faults and gaps that reach past one connection.

**A write race that can end the whole server.**  Hypercorn's ``TCPServer``
serialises its socket writes with a lock, but its ``_close()`` calls
``send_eof()`` outside that lock, and Trio's ``send_eof`` checkpoints while it
holds the stream's send side.  When one task closes the connection (the ASGI
app finished) while the connection's read task answers the client's close
frame, that answer's ``send_all`` raises ``trio.BusyResourceError``.
Hypercorn only catches broken or closed streams there, so the error escapes
the connection handler and Trio's ``serve_listeners`` nursery: every
connection of the process ends with it.  The connection is closing when this
happens (the other task is shutting the socket down), so the write that lost
the race has nowhere to go: the guard treats it exactly as Hypercorn treats a
broken stream at that spot.

The guard alone loses that write (a close frame, typically), so
``TCPServer._close`` is also made to take the send lock for its ``send_eof``
(bounded by :data:`CLOSE_LOCK_WAIT_S`; reentrant calls and a wait that runs
out go on unlocked, as before): a write already under way finishes first and
the race cannot start.  It matters most for ``/media-stream``, served straight
from Hypercorn's ASGI ``receive`` (:mod:`twibridge.server.media_asgi`): there,
our close frame crossing the caller's made the read task's ``send_eof`` beat
our close frame in ~1 connection in 10 (``tests/server/test_media_asgi.py``).

**A refused oversized message leaves a ghost call.**  A WebSocket message above
``websocket_max_message_size`` makes Hypercorn send a 1009 close frame and stop
reading, but it neither tells the app nor closes the connection: it waits for
the peer's close frame.  A peer that never sends one keeps the call live
(holding a ``max_calls`` slot and its agent session) until the idle timeout.
The guard finishes the job as Hypercorn does when the peer's close frame
arrives: the app gets ``websocket.disconnect`` with code 1009 and the
connection is closed.

**A finished app's queue wedges its connection.**  Hypercorn's read task
hands each WebSocket message (and the final ``websocket.disconnect``) to the
app through a bounded channel (``max_app_queue_size``, 10) and never looks
at whether the app is still there to read it.  Once the app has returned,
the 11th message a peer still sends blocks that task for good: the
connection never reads the peer's hang-up, its ``read_timeout`` (around the
socket read only) never fires, and when the app's close could not be sent
(the peer reset) nothing closes the socket either.  One fd and one task per
such call, for the process's life: the soak's leak under starvation (issue
#22, 5), where the bridge was seconds behind the caller's audio when the
caller hung up.  The guard closes the queue's receive side as the app
returns, and a put into a closed queue is dropped: nothing would read it.

**WebSocket compression is always offered.**  Hypercorn's ``Handshake``
accepts ``permessage-deflate`` whenever a client asks, with no setting to turn
it off, and inflates each frame before its size check: one 64 KB compressed
frame cost ~185 MB of memory (issue #23, 5).  Media Streams are base64 JSON
sent by Twilio uncompressed; the guard drops the client's offer, so the 101 never
carries ``Sec-WebSocket-Extensions``.

**No cap on connections.**  Hypercorn accepts every connection the kernel hands
it.  A connection past ``max_connections`` (a :class:`ConnectionCap` set on the
server's Hypercorn config as :data:`CAP_ATTRIBUTE`) is closed at once, before a
byte is read, so floods cannot use up the process's file descriptors (which
its agent and Redis connections need too).

:func:`install` wraps ``TCPServer.protocol_send``, ``TCPServer._close``, ``TCPServer.run``,
``WSStream._send_wsproto_event``, ``TaskGroup.spawn_app``, ``Handshake.accept`` and
``TCPServer.__init__`` once,
at import of :mod:`twibridge.server.app`.
``tests/server/test_hypercorn_fix.py`` drives the race with two tasks on a real
socket (and checks that unguarded, it raises);
``tests/server/test_fuzz.py::test_message_over_the_websocket_layers_limit_ends_the_call_at_once``
sends a real oversized message from a peer that never answers the close;
``tests/server/test_hypercorn_fix.py`` has the finished app's queue (a backlog
behind a call's end, from a peer that then hangs up or resets).

**Every write first waits a pass of the run loop.**  ``TCPServer.protocol_send``
takes the connection's send lock with ``async with``, and a free
``trio.Lock`` still sends the task to the back of the run queue: every
message to Twilio waited one pass behind all other calls' work before its
write (a few ms each under load, issue #16).  The guard gives each
``TCPServer`` a :class:`twibridge.locks.EagerLock` instead: taken at once
when free, waited for in turn when held, and the write itself still yields.

**When Hypercorn or quart-trio change.**  ``pyproject.toml`` bounds both
below the next minor release.  :func:`stale_guards` reads the installed
library's code and says, per guard, what it relies on that is gone (or what
upstream fixed, so the guard is dead weight); ``tests/server/test_guards.py``
fails with those lines.  Run it after raising a bound.
"""

from __future__ import annotations

from functools import wraps
from typing import Any, Awaitable, Callable

import inspect
import trio
from hypercorn.events import Closed, Event
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.ws_stream import ASGIWebsocketState, Handshake, WSStream
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from wsproto.events import CloseConnection
from wsproto.frame_protocol import CloseReason

from twibridge.locks import EagerLock

_GUARD = "_twibridge_guard"


Method = Callable[..., Awaitable[None]]

#: How long ``TCPServer._close`` waits for a write in flight before it shuts the socket down anyway.
CLOSE_LOCK_WAIT_S = 2.0

#: The attribute of a Hypercorn ``Config`` holding that server's :class:`ConnectionCap`.
CAP_ATTRIBUTE = "twibridge_connection_cap"


class ConnectionCap:
    """Open connections of one server, and how many were refused past ``limit``."""

    def __init__(self, limit: int, on_refused: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0
        self.on_refused = on_refused


def install() -> None:
    """Install every guard (idempotent)."""
    _wrap_once(TCPServer, "protocol_send", _guard_close_race)
    _wrap_once(TCPServer, "_close", _guard_eof_under_lock)
    _wrap_once(WSStream, "_send_wsproto_event", _guard_too_big)
    _wrap_once(TCPServer, "run", _guard_connection_cap)
    _wrap_once(Handshake, "accept", _guard_no_extensions)
    _wrap_once(TaskGroup, "spawn_app", _guard_app_queue)
    _wrap_once(TCPServer, "__init__", _guard_eager_send_lock)


def _wrap_once(owner: type, name: str, guard: Callable[[Any], Any]) -> None:
    original = getattr(owner, name)
    if getattr(original, _GUARD, False):
        return
    wrapper = wraps(original)(guard(original))
    setattr(wrapper, _GUARD, True)
    setattr(owner, name, wrapper)


def _guard_close_race(original: Method) -> Method:
    async def protocol_send(self: Any, event: Event) -> None:
        try:
            await original(self, event)
        except trio.BusyResourceError:
            # Another task is in send_eof: the connection is closing already.
            await self.protocol.handle(Closed())

    return protocol_send


def _guard_eof_under_lock(original: Method) -> Method:
    async def _close(self: Any) -> None:
        lock: trio.Lock = self.send_lock
        if lock.statistics().owner is trio.lowlevel.current_task():
            await original(self)  # reached from a write under the lock (a broken stream)
            return
        entered = False
        try:
            with trio.move_on_after(CLOSE_LOCK_WAIT_S):
                async with lock:
                    entered = True
                    await original(self)
                    return
        except trio.Cancelled:
            if not entered:  # cancelled while waiting: close as Hypercorn would have
                await original(self)
            raise
        await original(self)  # the write in flight never finished: shut down under it, as before

    return _close


def _guard_too_big(original: Method) -> Method:
    async def _send_wsproto_event(self: Any, event: Any) -> None:
        await original(self, event)
        # Only the read path sends 1009 while the app's socket is still open
        # (an app's own close moves the state to CLOSED before sending).
        if (
            isinstance(event, CloseConnection)
            and event.code == CloseReason.MESSAGE_TOO_BIG
            and self.state == ASGIWebsocketState.CONNECTED
            and not self.closed
            and self.app_put is not None
        ):
            self.closed = True  # later events and the app's own close are moot
            await self.app_put({"type": "websocket.disconnect", "code": CloseReason.MESSAGE_TOO_BIG.value})
            await self.send(StreamClosed(stream_id=self.stream_id))

    return _send_wsproto_event


def _guard_app_queue(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def spawn_app(self: Any, app: Any, config: Any, scope: Any, send: Any) -> Callable[[Any], Awaitable[None]]:
        async def app_then_close_queue(scope: Any, receive: Any, *args: Any) -> None:
            try:
                await app(scope, receive, *args)
            finally:
                # ``receive`` is the queue's receive side (a bound method): closing it wakes a
                # put blocked on the full queue, and fails every later one, with BrokenResourceError.
                receive.__self__.close()

        put = await original(self, app_then_close_queue, config, scope, send)

        @wraps(put)
        async def put_unless_gone(event: Any) -> None:
            try:
                await put(event)
            except trio.BrokenResourceError:
                pass  # the app has returned: nothing will read this event

        return put_unless_gone

    return spawn_app


def _guard_no_extensions(original: Callable[..., Any]) -> Callable[..., Any]:
    def accept(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.extensions = None  # the client's offer, ignored: nothing negotiated
        return original(self, *args, **kwargs)

    return accept


def _guard_eager_send_lock(original: Callable[..., None]) -> Callable[..., None]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.send_lock = EagerLock()

    return __init__


def _guard_connection_cap(original: Method) -> Method:
    async def run(self: Any) -> None:
        cap: ConnectionCap | None = getattr(self.config, CAP_ATTRIBUTE, None)
        if cap is None:
            await original(self)
            return
        if cap.open >= cap.limit:
            cap.refused += 1
            if cap.on_refused is not None:
                cap.on_refused()
            await trio.aclose_forcefully(self.stream)
            return
        cap.open += 1
        try:
            await original(self)
        finally:
            cap.open -= 1

    return run


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(inspect.unwrap(obj))
    except (OSError, TypeError):
        return ""


def _params(obj: Any) -> list[str]:
    return list(inspect.signature(inspect.unwrap(obj)).parameters)


def stale_guards() -> list[str]:
    """One line per guard that no longer fits the installed libraries (empty: all apply).

    Checks what each guard assumes of the code it wraps or subclasses: the
    methods and their parameters, the attributes it reads, and the flaw it
    covers (still present upstream).  A line starts with the guard's name.
    """
    from hypercorn.protocol import ws_stream
    from hypercorn.trio import task_group as hc_task_group
    from hypercorn.trio import tcp_server
    from quart_trio import asgi as qt_asgi
    from quart_trio.wrappers import TrioWebsocket

    problems: list[str] = []

    def need(guard: str, ok: bool, what: str) -> None:
        if not ok:
            problems.append(f"{guard}: {what}")

    race = "hypercorn_fix.close_race (TCPServer.protocol_send)"
    send_src = _source(TCPServer.protocol_send)
    need(race, _params(TCPServer.protocol_send) == ["self", "event"], "protocol_send(self, event) changed")
    need(race, "send_all" in send_src and "BusyResourceError" not in send_src,
         "protocol_send catches BusyResourceError itself now (fixed upstream? drop the guard)")
    need(race, "send_eof" in _source(tcp_server.TCPServer._close) and "send_lock" not in _source(
        tcp_server.TCPServer._close), "_close no longer calls send_eof outside the send lock (fixed upstream?)")
    need(race, "self.protocol" in _source(TCPServer.__init__), "TCPServer has no .protocol to tell Closed()")
    need(race, _params(TCPServer._close) == ["self"] and "self.send_lock = trio.Lock()" in _source(TCPServer.__init__),
         "TCPServer._close(self) or its send_lock changed")

    big = "hypercorn_fix.too_big (WSStream._send_wsproto_event)"
    ws_src = inspect.getsource(ws_stream)
    need(big, _params(WSStream._send_wsproto_event) == ["self", "event"], "_send_wsproto_event(self, event) changed")
    need(big, "CloseConnection(code=CloseReason.MESSAGE_TOO_BIG)" in ws_src,
         "the read path no longer sends a 1009 close itself")
    init_src = _source(WSStream.__init__)
    for attr in ("self.closed", "self.app_put", "self.state", "self.stream_id"):
        need(big, attr in init_src, f"WSStream has no {attr}")
    need(big, hasattr(ASGIWebsocketState, "CONNECTED"), "ASGIWebsocketState.CONNECTED is gone")

    deflate = "hypercorn_fix.no_extensions (Handshake.accept)"
    need(deflate, _params(Handshake.accept)[0] == "self", "Handshake.accept is no longer a method")
    need(deflate, "self.extensions is not None" in _source(Handshake.accept),
         "Handshake.accept no longer negotiates from self.extensions (dropping the offer may not stop it)")
    queue = "hypercorn_fix.app_queue (TaskGroup.spawn_app)"
    spawn_src = _source(TaskGroup.spawn_app)
    need(queue, _params(TaskGroup.spawn_app) == ["self", "app", "config", "scope", "send"],
         "spawn_app(self, app, config, scope, send) changed")
    need(queue, "app_receive_channel.receive," in spawn_src and "return app_send_channel.send" in spawn_src,
         "spawn_app no longer hands the app a memory channel's receive and returns its send")
    need(queue, "await app(scope, receive, send, sync_spawn, call_soon)" in _source(hc_task_group._handle),
         "_handle no longer calls app(scope, receive, send, sync_spawn, call_soon)")
    need(queue, "await self.app_put(self.buffer.to_message())" in _source(WSStream._handle_events)
         and "self.closed" not in _source(WSStream._handle_events),
         "WSStream._handle_events no longer puts every message unconditionally (fixed upstream?)")

    eager = "hypercorn_fix.eager_send_lock (TCPServer.__init__)"
    need(eager, "async with self.send_lock:" in send_src,
         "protocol_send no longer takes send_lock with `async with` (the lock's use changed)")
    need(eager, "send_lock" not in inspect.getsource(tcp_server).replace("self.send_lock", ""),
         "send_lock is used other than as self.send_lock")

    cap = "hypercorn_fix.connection_cap (TCPServer.run)"
    tcp_init = _source(TCPServer.__init__)
    need(cap, _params(TCPServer.run) == ["self"], "TCPServer.run(self) changed")
    need(cap, "self.config = config" in tcp_init and "self.stream = stream" in tcp_init,
         "TCPServer has no .config / .stream")

    # twibridge/server/asgi.py: subclasses whose overrides quart-trio must still call.
    quiet = "asgi.QuietWebsocketConnection (quart-trio TrioASGIWebsocketConnection)"
    wsc = qt_asgi.TrioASGIWebsocketConnection
    need(quiet, _params(wsc.handle_messages) == ["self", "nursery", "receive"], "handle_messages signature changed")
    need(quiet, _params(wsc.send_data) == ["self", "send", "data"], "send_data signature changed")
    need(quiet, "self.handle_messages" in _source(wsc.__call__) and "self.send_data" in _source(wsc),
         "handle_messages/send_data are no longer what quart-trio calls")
    closing = "asgi.ClosingHTTPConnection (quart-trio TrioASGIHTTPConnection)"
    hc = qt_asgi.TrioASGIHTTPConnection
    need(closing, _params(hc.handle_request) == ["self", "nursery", "request", "send"],
         "handle_request signature changed")
    media = "asgi.MediaWebsocket (quart-trio TrioWebsocket)"
    ws_init = _source(TrioWebsocket.__init__)
    need(media, "self._receive = receive" in ws_init and "self._send = send" in ws_init,
         "quart's Websocket no longer keeps _receive/_send")
    need(media, _params(TrioWebsocket.accept)[:3] == ["self", "headers", "subprotocol"], "accept() signature changed")
    return problems
