"""twibridge.server.media_asgi: ``/media-stream`` in front of Quart, on a real Hypercorn with raw clients.

The route alone (a probe handler, an inner app that records what reaches
it): other scopes pass through untouched, a disconnect cancels the handler,
a message over Hypercorn's limit is a protocol error, a handler's bug
refuses (before accepting) or closes 1011 (after), and the close handshake
completes from either side.  Then the real bridge: refusals keep Quart's
status and body, Quart's own routes still answer, and a Twilio-like stream
that sends ``stop`` and its close frame at once always gets its close
answered (the close race of docs/benchmarks.md, "Found on the way").
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from rawws import TEXT, TrioClient, encode_frame, handshake, twilio_signature

from twibridge.server import hypercorn_fix
from twibridge.server.media_asgi import MediaSocket, MediaStreamRoute
from twibridge.twilio.protocol import RemoteProtocolError


class Probe:
    """The handler's side: what it got, and how it ended."""

    def __init__(self, *, accept: bool = True, fail: str = "", close_on: str = "") -> None:
        self.accept, self.fail, self.close_on = accept, fail, close_on
        self.got: list[str | bytes] = []
        self.first = trio.Event()
        self.done = trio.Event()
        self.ended = ""  # "cancelled", "protocol-error: …", "closed", "raised"
        self.inner: list[tuple[str, str]] = []  # scopes the wrapped app saw: (type, path)

    async def handler(self, ws: MediaSocket) -> None:
        try:
            if self.fail == "before":
                raise RuntimeError("bug before accepting")
            if self.accept:
                await ws.accept()
            while self.accept:
                msg = await ws.receive()
                self.got.append(msg)
                self.first.set()
                if self.fail == "after":
                    raise RuntimeError("bug in a call")
                if msg == self.close_on:
                    await ws.close(1000)
                    self.ended = "closed"
                    return
        except trio.Cancelled:
            self.ended = "cancelled"
            raise
        except RemoteProtocolError as e:
            self.ended = f"protocol-error: {e}"
        except RuntimeError:
            self.ended = "raised"
            raise
        finally:
            self.done.set()

    async def inner_app(self, scope: Any, receive: Any, send: Any) -> None:
        """Stands for Quart: answers HTTP 200 and refuses websockets (Hypercorn: 403)."""
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.inner.append((scope["type"], scope["path"]))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
            await send({"type": "http.response.body", "body": b"inner"})
        else:
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1000})


@asynccontextmanager
async def route(probe: Probe, *, max_message: int = 64 * 1024, close_wait_s: float = 2.0) -> AsyncIterator[str]:
    hypercorn_fix.install()  # as app.py does: the 1009 disconnect comes from its guard
    hc = HypercornConfig()
    hc.bind = ["127.0.0.1:0"]
    hc.accesslog = hc.errorlog = None
    hc.graceful_timeout = 1.0
    hc.websocket_max_message_size = max_message
    app = MediaStreamRoute(probe.inner_app, probe.handler, close_wait_s=close_wait_s)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(app, hc, shutdown_trigger=stop.wait,  # type: ignore[arg-type]
                                                              task_status=task_status, mode="asgi"))
        try:
            yield binds[0]
        finally:
            stop.set()


async def upgrade(url: str, path: str = "/media-stream", signature: str = "") -> tuple[bytes, bytes]:
    """A raw upgrade request; the response's status line and body (the server closes after a refusal)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    try:
        await stream.send_all(handshake(f"{host}:{port}", path, signature or None))
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(4096):
                data += chunk
                if b" 101 " in data.split(b"\r\n", 1)[0]:
                    break
    finally:
        await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], body


async def test_only_media_stream_websockets_are_served_here() -> None:
    probe = Probe()
    async with route(probe) as url:
        async with httpx.AsyncClient() as http:
            resp = await http.get(url + "/media-stream")
        status, _ = await upgrade(url, "/other")
        client = await TrioClient.connect(url)
        try:
            await client.text("hello")
            with trio.fail_after(5):
                await probe.first.wait()
        finally:
            await client.aclose()
    assert resp.status_code == 200 and resp.text == "inner"
    assert b" 403 " in status
    assert probe.inner == [("http", "/media-stream"), ("websocket", "/other")]
    assert probe.got == ["hello"]


async def test_a_disconnect_cancels_the_handler() -> None:
    for reset in (False, True):  # a bare FIN, then RST: no close frame either way
        probe = Probe()
        async with route(probe) as url:
            client = await TrioClient.connect(url)
            await client.text("x")
            with trio.fail_after(5):
                await probe.first.wait()
            await client.abort(reset=reset)
            with trio.fail_after(5):
                await probe.done.wait()
        assert probe.ended == "cancelled", f"reset={reset}: {probe.ended!r}"


async def test_a_message_over_the_websocket_layers_limit_is_a_protocol_error() -> None:
    probe = Probe()
    async with route(probe, max_message=1000) as url:
        client = await TrioClient.connect(url)
        try:
            await client.text("small")
            await client.text("x" * 2000)
            client.closed_sent = True  # a peer that never answers: the server alone ends it
            with trio.fail_after(5):
                ending = await client.read_until_closed()
                await probe.done.wait()
        finally:
            await client.aclose()
    assert probe.got == ["small"]
    assert probe.ended.startswith("protocol-error: message too large")
    assert ending.server_code == 1009 and ending.eof


async def test_a_handler_bug_refuses_before_accepting_and_closes_1011_after(captured_logs) -> None:
    before, after = Probe(fail="before"), Probe(fail="after")
    async with route(before) as url:
        status, body = await upgrade(url)
    async with route(after) as url:
        client = await TrioClient.connect(url)
        try:
            await client.text("x")
            with trio.fail_after(5):
                ending = await client.read_until_closed()
        finally:
            await client.aclose()
    assert b" 500 " in status and body == b"internal error\n"
    assert after.ended == "raised" and ending.server_code == 1011 and ending.eof
    assert len(captured_logs.events("ws.internal_error")) == 2


async def test_a_handler_that_neither_accepts_nor_refuses_gets_quarts_403() -> None:
    probe = Probe(accept=False)
    async with route(probe) as url:
        status, _ = await upgrade(url)
    assert b" 403 " in status


async def test_the_close_handshake_completes_from_either_side() -> None:
    probe = Probe(close_on="bye")
    async with route(probe) as url:
        ours = await TrioClient.connect(url)  # the server closes first; the client answers
        try:
            await ours.text("bye")
            with trio.fail_after(5):
                by_server = await ours.read_until_closed()
        finally:
            await ours.aclose()
        theirs_probe = Probe()
    async with route(theirs_probe) as url:
        theirs = await TrioClient.connect(url)  # the client closes first; the server answers
        try:
            await theirs.text("x")
            with trio.fail_after(5):
                await theirs_probe.first.wait()
                by_client = await theirs.close(1000)
                await theirs_probe.done.wait()
        finally:
            await theirs.aclose()
    assert by_server.server_code == 1000 and by_server.server_closed_first and by_server.eof
    assert by_client.server_code == 1000 and not by_client.server_closed_first and by_client.eof
    assert theirs_probe.ended == "cancelled"


async def test_a_peer_that_never_answers_our_close_is_let_go() -> None:
    probe = Probe(close_on="bye")
    async with route(probe, close_wait_s=0.05) as url:
        client = await TrioClient.connect(url)
        try:
            await client.text("bye")
            client.closed_sent = True  # it reads our close frame but never answers it
            with trio.fail_after(5):  # the server lets go after close_wait_s
                ending = await client.read_until_closed()
        finally:
            await client.aclose()
    assert ending.server_code == 1000 and ending.eof


async def test_message_then_close_at_once_always_gets_its_close_answered() -> None:
    """The handler returns on "stop" while Hypercorn's read task answers the close frame right behind it.

    Without the wait for Hypercorn's disconnect, the app's return shuts the
    socket down under that answer (the close race): the client's close frame
    went unanswered.
    """
    probe = Probe(close_on="stop")
    async with route(probe) as url:
        for _ in range(25):
            client = await TrioClient.connect(url)
            try:
                client.closed_sent = True
                await client.send(encode_frame(TEXT, b"stop") + encode_frame(0x8, b"\x03\xe8", fin=True))
                with trio.fail_after(5):
                    ending = await client.read_until_closed()
            finally:
                await client.aclose()
            assert ending.server_code == 1000 and ending.eof


# -- the real bridge ---------------------------------------------------------------------------


async def test_bridge_refusals_keep_quarts_answer_and_quart_still_serves_the_rest(captured_logs) -> None:
    from support import bridge

    async with bridge() as (url, rt):
        status, body = await upgrade(url, signature="bm90LWEtc2lnbmF0dXJl")
        async with httpx.AsyncClient() as http:
            health = await http.get(url + "/healthz")
            plain_get = await http.get(url + "/media-stream")
        other, _ = await upgrade(url, "/not-a-route", signature=twilio_signature(url))
        assert rt.calls == {}
    assert b" 403 " in status and body == b"invalid signature\n"
    assert captured_logs.events("ws.bad_signature")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert plain_get.status_code in (404, 405)  # Quart's: no HTTP route there
    assert b" 404 " in other


async def test_bridge_stop_and_close_at_once_ends_the_call_cleanly(captured_logs) -> None:
    from support import bridge, sid
    from test_fuzz import fill, valid_events

    events = valid_events()
    async with bridge() as (url, rt):
        for n in range(1, 11):
            client = await TrioClient.connect(url)
            try:
                raw = b"".join(encode_frame(TEXT, fill(json.dumps(ev).encode(), sid("CA", n), sid("MZ", n)))
                               for ev in (events[0], events[1], events[5]))
                client.closed_sent = True
                await client.send(raw + encode_frame(0x8, b"\x03\xe8"))
                with trio.fail_after(5):
                    ending = await client.read_until_closed()
                    while rt.calls:
                        await rt.calls_changed.wait()
            finally:
                await client.aclose()
            assert ending.server_code == 1000 and ending.eof
        async with httpx.AsyncClient() as http:
            assert (await http.get(url + "/healthz")).status_code == 200  # the server lives
    ended = captured_logs.events("call.ended")
    assert len(ended) == 10 and {e["outcome"] for e in ended} == {"completed"}
