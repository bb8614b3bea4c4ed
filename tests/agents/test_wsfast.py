"""AgentSocket's direct frame write (agents/wsfast.py): what reaches the peer is exactly what was sent, in order."""

from __future__ import annotations

import socket
from functools import partial

import trio
import wsproto
from trio_websocket import WebSocketRequest, serve_websocket
from wsproto.events import BytesMessage, TextMessage

from twibridge.agents.websocket import AgentSocket
from twibridge.agents.wsfast import mask_frame


def test_a_masked_frame_reads_back_with_wsproto() -> None:
    server = wsproto.connection.Connection(wsproto.connection.ConnectionType.SERVER)
    for payload, opcode in ((b"", 0x2), (b"\xff" * 125, 0x2), (b"\x01" * 126, 0x2), (bytes(range(256)) * 40, 0x2),
                            ("héllo {}".encode(), 0x1)):
        server.receive_data(mask_frame(payload, opcode, b"\x12\x34\x56\x78"))
        (event,) = list(server.events())
        if opcode == 0x1:
            assert isinstance(event, TextMessage) and event.data == payload.decode()
        else:
            assert isinstance(event, BytesMessage) and bytes(event.data) == payload
        assert event.message_finished


async def test_mixed_messages_arrive_whole_and_in_order_over_plain_tcp() -> None:
    got: list[str | bytes] = []
    done = trio.Event()
    sent: list[str | bytes] = [b"\xff" * 160, '{"type":"mark"}', b"", b"\x00" * 70000, "é" * 200]
    sent += [bytes([i % 256]) * 160 for i in range(300)]

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        while len(got) < len(sent):
            got.append(await ws.get_message())
        done.set()
        await ws.get_message()  # until the client closes

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, ssl_context=None,
                                             max_message_size=1 << 20))
        port = server.port
        sock = await AgentSocket.open(nursery, f"ws://127.0.0.1:{port}/agent", {}, "agent")
        assert sock._fast is not None  # noqa: SLF001 — plain TCP takes the direct path
        for message in sent:
            await sock.send(message)
        with trio.fail_after(10):
            await done.wait()
        await sock.aclose()
        nursery.cancel_scope.cancel()
    assert got == sent


async def test_a_full_socket_buffer_finishes_the_tail_and_keeps_order() -> None:
    got: list[str | bytes] = []
    sent: list[str | bytes] = [bytes([i % 256]) * 160 + i.to_bytes(4, "big") for i in range(3000)]
    done = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await trio.sleep(0.3)  # let the client's buffer fill: partial writes, then waits for room
        while len(got) < len(sent):
            got.append(await ws.get_message())
        done.set()
        await ws.get_message()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, ssl_context=None))
        sock = await AgentSocket.open(nursery, f"ws://127.0.0.1:{server.port}/agent", {}, "agent")
        assert sock._fast is not None  # noqa: SLF001
        sock._fast.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # noqa: SLF001
        partial_writes = 0
        real_try = sock._fast.try_write  # noqa: SLF001

        def counting(message: str | bytes) -> int | None:
            nonlocal partial_writes
            left = real_try(message)
            partial_writes += bool(left)
            return left

        sock._fast.try_write = counting  # type: ignore[method-assign]  # noqa: SLF001
        for message in sent:
            await sock.send(message)
        with trio.fail_after(10):
            await done.wait()
        await sock.aclose()
        nursery.cancel_scope.cancel()
    assert partial_writes > 0  # the tail path ran
    assert got == sent
