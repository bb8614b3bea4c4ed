"""twibridge.server.hypercorn_fix: a write that races another task's use of the socket's send side.

(The guard for messages above Hypercorn's size limit is tested end to end in
``test_fuzz.py``; the no-compression, connection-cap and finished-app-queue
guards at the end of this file, against the real bridge.)

Hypercorn's own ``TCPServer.protocol_send`` runs against a real loopback
socket.  Another task holds the stream's send side outside Hypercorn's send
lock (as ``send_eof`` does in ``TCPServer._close``): here a large
``send_all`` the peer never reads, so the race is deterministic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.ws_stream import WSStream
from hypercorn.trio.tcp_server import TCPServer

from twibridge.server import hypercorn_fix


class Connection:
    """The three attributes of a TCPServer that ``protocol_send`` uses."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.send_lock = trio.Lock()
        self.handled: list[Event] = []
        self.protocol = self

    async def handle(self, event: Event) -> None:  # hypercorn's ProtocolWrapper.handle
        self.handled.append(event)


@asynccontextmanager
async def send_side_busy() -> AsyncIterator[Connection]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.send_all, b"\0" * 50_000_000)  # the peer never reads: blocks mid-send
            await trio.testing.wait_all_tasks_blocked()
            yield Connection(server)
            nursery.cancel_scope.cancel()
    finally:
        for s in (client, server, *listeners):
            await s.aclose()


async def test_unguarded_the_race_raises_out_of_hypercorn() -> None:
    hypercorn_fix.install()
    unguarded: Any = TCPServer.protocol_send.__wrapped__  # type: ignore[attr-defined]
    async with send_side_busy() as conn:
        with pytest.raises(trio.BusyResourceError):
            await unguarded(conn, RawData(data=b"\x88\x02\x03\xe8"))


async def test_guarded_the_losing_write_closes_the_connection() -> None:
    hypercorn_fix.install()
    hypercorn_fix.install()  # idempotent: wrapped once
    assert not getattr(TCPServer.protocol_send.__wrapped__, "_twibridge_guard", False)  # type: ignore[attr-defined]
    assert not getattr(WSStream._send_wsproto_event.__wrapped__, "_twibridge_guard", False)  # type: ignore[attr-defined]
    async with send_side_busy() as conn:
        await TCPServer.protocol_send(conn, RawData(data=b"\x88\x02\x03\xe8"))  # type: ignore[arg-type]
    assert [type(e) for e in conn.handled] == [Closed]


# -- no WebSocket extensions; the connection cap (issue #23, items 5 and 8) ----------------------


async def raw_upgrade(url: str, extensions: str) -> tuple[bytes, trio.SocketStream]:
    """A signed upgrade offering ``extensions``; the response head and the open stream."""
    from rawws import handshake, twilio_signature

    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    request = handshake(f"{host}:{port}", "/media-stream", twilio_signature(url))
    await stream.send_all(request[:-2] + f"Sec-WebSocket-Extensions: {extensions}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = await stream.receive_some(4096)
        assert data, f"closed during the handshake: {head!r}"
        head += data
    return head, stream


async def test_permessage_deflate_is_never_negotiated_and_a_deflate_bomb_is_refused() -> None:
    """A 64 KB compressed frame once inflated to ~185 MB before any size check."""
    import struct
    import zlib

    from rawws import CLOSE, TEXT, FrameReader, encode_frame
    from support import bridge

    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = deflater.compress(b"A" * (64 * 1024 * 1024)) + deflater.flush(zlib.Z_SYNC_FLUSH)
    bomb = bomb[:-4]  # RFC 7692: the sync-flush tail is left off
    async with bridge() as (url, rt):
        with trio.fail_after(15):
            head, stream = await raw_upgrade(url, "permessage-deflate; client_max_window_bits")
            assert head.startswith(b"HTTP/1.1 101")
            assert b"sec-websocket-extensions" not in head.lower()
            await stream.send_all(encode_frame(TEXT, bomb, rsv=0b100))  # RSV1: "compressed"
            reader, code = FrameReader(), None
            while code is None:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                if not data:
                    break
                for opcode, payload in reader.feed(data):
                    if opcode == CLOSE:
                        code = struct.unpack("!H", payload[:2])[0]
            await stream.aclose()
            while rt.active:
                await rt.calls_changed.wait()
    # RSV1 without the extension is a protocol error (wsproto's ParseFailed, before any
    # inflating): Hypercorn drops the connection with no close frame, and the socket is gone.
    assert len(bomb) < 128 * 1024 and code is None


async def test_connections_past_max_connections_are_closed_at_accept() -> None:
    import httpx

    from support import bridge, make_config

    cfg = make_config(server={"max_connections": 3})
    async with bridge(cfg) as (url, rt):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with trio.fail_after(10):
            idle = [await trio.open_tcp_stream(host, int(port)) for _ in range(3)]
            extra = await trio.open_tcp_stream(host, int(port))
            await extra.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answered = await extra.receive_some(4096)
            except trio.BrokenResourceError:
                answered = b""
            for stream in idle:
                await stream.aclose()
            await extra.aclose()
            async with httpx.AsyncClient() as client:
                while True:  # the idle ones are released as Hypercorn notices their close
                    try:
                        health = await client.get(url + "/healthz")
                        break
                    except httpx.TransportError:
                        await trio.sleep(0.05)
        overload = rt.metrics.calls.labels(outcome="refused_overload")._value.get()  # type: ignore[union-attr]
    assert answered == b"" and health.status_code == 200 and overload >= 1


# -- a finished app's queue (issue #22, part 5: the soak's leak under starvation) ------------------


async def test_messages_after_the_app_finished_never_wedge_the_connection() -> None:
    """The caller keeps sending after its call ended, more than Hypercorn queues for the app, then
    hangs up: the connection must still see the hang-up, close its socket and end its tasks.

    In the soak a starved bridge was seconds behind the caller's audio: the caller hung up, the send
    failed, the app was told ``disconnect`` and ended, and Hypercorn's read task went on feeding the
    backlog still in the socket into the app's queue (10 deep) that nobody read any more, blocked
    there for good, never read the hang-up, and kept the socket and its task (one each per call).
    Here the app ends first (a protocol error: close 1008) and the caller's backlog comes after.
    """
    from rawws import CLOSE, TrioClient, encode_frame
    from support import bridge
    from test_leaks import fd_count, task_count
    from twibridge.twilio import emulation as emu

    async with bridge() as (url, rt):
        await trio.testing.wait_all_tasks_blocked()
        tasks, fds = task_count(), fd_count()
        with trio.fail_after(10):
            client = await TrioClient.connect(url)
            await client.text(emu.build_connected())
            await client.text('{"event": "nonsense"}')  # before start: the call ends, 1008
            frames = list(client.early)
            while not any(op == CLOSE for op, _ in frames):
                data = await client.stream.receive_some(65536)
                assert data, "the server closed the socket without a close frame"
                frames += client.reader.feed(data)
            while rt.active:  # the call's handler has returned: nothing reads its messages now
                await rt.calls_changed.wait()
            media = emu.build_inbound_media(2, "MZ" + "0" * 32, 1, 0, b"\xff" * 160)
            await client.send(encode_frame(0x1, media.encode()) * 100)  # > Hypercorn's app queue (10)
            await client.stream.send_eof()  # the hang-up: a FIN after the backlog
            while await client.stream.receive_some(65536):  # until the server closes its side too
                pass
            await client.aclose()
            await trio.testing.wait_all_tasks_blocked()
        assert (task_count() - tasks, fd_count() - fds) == (0, 0)


async def test_a_caller_resetting_with_a_backlog_the_app_never_reads_leaves_nothing() -> None:
    """The soak's case itself: the app ends (here on a bad message) with the caller's audio still
    unread behind it, and the caller resets the connection.  The close frame cannot go out, so
    Hypercorn tells the app ``disconnect`` and never closes the socket itself: unguarded, its read
    task waits on the app's full queue for good, holding the socket (fd) and the task."""
    import os
    import socket
    import struct

    from rawws import TEXT, TrioClient, encode_frame
    from support import ACCOUNT_SID, bridge, sid, stream_params
    from test_leaks import fd_count, task_count
    from twibridge.twilio import emulation as emu

    async with bridge() as (url, rt):
        await trio.testing.wait_all_tasks_blocked()
        tasks, fds = task_count(), fd_count()
        with trio.fail_after(10):
            client = await TrioClient.connect(url)
            stream_sid, call_sid = sid("MZ", 1), sid("CA", 1)
            await client.text(emu.build_connected())
            await client.text(emu.build_start(1, stream_sid, ACCOUNT_SID, call_sid, stream_params(call_sid)))
            while not rt.calls:
                await rt.calls_changed.wait()
            media = emu.build_inbound_media(2, stream_sid, 1, 0, b"\xff" * 160).encode()
            backlog = encode_frame(TEXT, b"not json") + encode_frame(TEXT, media) * 100
            sock = client.stream.socket
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # No checkpoint between the write and the reset: the server finds both waiting.
            assert os.write(sock.fileno(), backlog) == len(backlog)
            sock.close()
            while rt.calls:
                await rt.calls_changed.wait()
            await trio.testing.wait_all_tasks_blocked()
        assert (task_count() - tasks, fd_count() - fds) == (0, 0)
