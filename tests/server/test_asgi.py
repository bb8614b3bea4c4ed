"""twibridge.server.asgi, on a real Hypercorn with raw clients.

A minimal Quart-Trio app with one websocket route, so what is tested is the
connection class: messages arrive unchanged and in order (text, binary,
empty binary), Quart's ``websocket_received`` signal still fires, and a
client that disconnects cancels the handler (nothing left running).
"""

from __future__ import annotations

from typing import Any

import trio
from quart import websocket
from quart.signals import websocket_received
from quart_trio import QuartTrio
from fakes.twilio_rest import serve_asgi
from rawws import BINARY, TEXT, TrioClient, encode_frame

from twibridge.server.asgi import QuietWebsocketConnection, MediaWebsocket


class Probe:
    def __init__(self) -> None:
        self.got: list[str | bytes] = []
        self.counted = trio.Event()
        self.handler_done = trio.Event()
        self.cancelled = False


def make_app(probe: Probe, expect: int, accept: bool = True) -> QuartTrio:
    app = QuartTrio("asgi-test")
    app.asgi_websocket_class = QuietWebsocketConnection
    app.websocket_class = MediaWebsocket

    @app.websocket("/media-stream")
    async def ws() -> None:
        if accept:
            await websocket.accept()
        else:
            await websocket.send("first")  # Quart accepts implicitly on first use
        try:
            while True:
                probe.got.append(await websocket.receive())
                if len(probe.got) == expect:
                    probe.counted.set()
        except trio.Cancelled:
            probe.cancelled = True
            raise
        finally:
            probe.handler_done.set()

    return app


async def test_messages_arrive_unchanged_and_in_order() -> None:
    probe = Probe()
    sent: list[str | bytes] = ["hello", b"\x00\x01\xff", b"", "é" * 3]
    async with serve_asgi(make_app(probe, len(sent))) as url:
        client = await TrioClient.connect(url)
        try:
            for m in sent:
                frame = encode_frame(BINARY, m) if isinstance(m, bytes) else encode_frame(TEXT, m.encode())
                assert await client.send(frame)
            with trio.fail_after(5):
                await probe.counted.wait()
        finally:
            await client.aclose()
    assert probe.got == sent  # the empty binary frame stays b"", not None


async def test_first_send_accepts_implicitly_like_quart() -> None:
    probe = Probe()
    async with serve_asgi(make_app(probe, 1, accept=False)) as url:
        client = await TrioClient.connect(url)  # returns once the upgrade was answered: accepted
        try:
            frames = client.early  # often in the same read as the 101
            with trio.fail_after(5):
                while not frames:
                    frames = client.reader.feed(await client.stream.receive_some(4096))
            assert frames[0] == (TEXT, b"first")
            await client.text("x")
            with trio.fail_after(5):
                await probe.counted.wait()
        finally:
            await client.aclose()
    assert probe.got == ["x"]


async def test_websocket_received_signal_still_fires() -> None:
    probe = Probe()
    heard: list[Any] = []

    async def listener(sender: Any, **kwargs: Any) -> None:
        heard.append(sender)

    websocket_received.connect(listener)
    try:
        async with serve_asgi(make_app(probe, 2)) as url:
            client = await TrioClient.connect(url)
            try:
                await client.text("one")
                await client.text("two")
                with trio.fail_after(5):
                    await probe.counted.wait()
            finally:
                await client.aclose()
    finally:
        websocket_received.disconnect(listener)
    assert heard == ["one", "two"]


async def test_a_disconnect_cancels_the_handler() -> None:
    for reset in (False, True):  # close frame-less FIN, then RST
        probe = Probe()
        async with serve_asgi(make_app(probe, 1)) as url:
            client = await TrioClient.connect(url)
            await client.text("x")
            with trio.fail_after(5):
                await probe.counted.wait()
            await client.abort(reset=reset)
            with trio.fail_after(5):
                await probe.handler_done.wait()
        assert probe.cancelled, f"reset={reset}: the handler ended without being cancelled"


async def test_a_close_frame_cancels_the_handler() -> None:
    probe = Probe()
    async with serve_asgi(make_app(probe, 1)) as url:
        client = await TrioClient.connect(url)
        try:
            await client.text("x")
            with trio.fail_after(5):
                await probe.counted.wait()
                ending = await client.close(1000)
                await probe.handler_done.wait()
        finally:
            await client.aclose()
    assert probe.cancelled
    assert ending.server_code == 1000
