"""twibridge.server.hypercorn_fix: a write that races another task's use of the socket's send side.

(The guard for messages above Hypercorn's size limit is tested end to end in
``test_fuzz.py``; the no-compression and connection-cap guards at the end of
this file, against the real bridge.)

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
