"""bench.floor_openai does what Twilio's sample does, no more: every caller frame reaches the Realtime
server as one append, and the reply comes back as ``media`` + ``mark`` per delta (else its CPU
figure would not be the floor it claims to be)."""

from __future__ import annotations

import base64
import json
import socket
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from trio_websocket import open_websocket_url

from bench import fake_realtime, fakeserver
from bench.floor_openai import make_app
from fakes import frames, silence, tone

KEY = "sk-bench-floor-0123456789"
SID = "MZ" + "f" * 32


async def test_the_floor_forwards_every_frame_and_each_delta_as_media_and_a_mark() -> None:
    utterance = frames(tone(400))
    heard = b"".join(utterance[fake_realtime.START_FRAMES:])  # the fake's VAD starts the utterance there
    sent = utterance + frames(silence(700))  # the fake answers after 25 quiet frames (it counts, no clock)
    appends_before = fake_realtime.Conn.total_appends
    got: list[dict[str, object]] = []
    with socket.socket() as sock:
        await run(sent, heard, got, sock)
    assert fake_realtime.Conn.total_appends - appends_before == len(sent)
    audio = b"".join(base64.b64decode(m["media"]["payload"]) for m in got if m["event"] == "media")  # type: ignore[index]
    assert audio == heard  # the fake echoes the utterance, byte for byte
    kinds = [m["event"] for m in got]
    assert kinds[0] == "clear"  # the caller started speaking
    assert kinds[1:] == ["media", "mark"] * ((len(kinds) - 1) // 2)
    assert all(m["streamSid"] == SID for m in got)


async def run(sent: list[bytes], heard: bytes, got: list[dict[str, object]], sock: socket.socket) -> None:
    """The fake, the floor on ``sock`` and one caller, until the reply to ``sent`` was heard."""
    async with trio.open_nursery() as nursery:
        fake_port = await nursery.start(partial(fakeserver.serve, fake_realtime.handle, "fake-realtime",
                                                dict, "127.0.0.1", 0, KEY, signals=False))
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        config = Config()
        port = sock.getsockname()[1]
        config.bind = [f"fd://{sock.detach()}"]  # Hypercorn's now: it closes it
        config.accesslog = config.errorlog = None
        stop = trio.Event()
        app = make_app(f"ws://127.0.0.1:{fake_port}/v1/realtime", KEY)
        nursery.start_soon(partial(serve, app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        url = f"ws://127.0.0.1:{port}/media-stream"
        with trio.fail_after(10):
            async with open_websocket_url(url) as ws:
                await ws.send_message(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
                await ws.send_message(json.dumps({"event": "start", "streamSid": SID, "start": {"streamSid": SID}}))
                for i, frame in enumerate(sent):
                    await ws.send_message(json.dumps({"event": "media", "streamSid": SID, "media": {
                        "track": "inbound", "chunk": str(i + 1), "timestamp": str(20 * i),
                        "payload": base64.b64encode(frame).decode()}}))
                audio = 0
                while audio < len(heard):
                    got.append(json.loads(await ws.get_message()))
                    if got[-1]["event"] == "media":
                        audio += len(base64.b64decode(got[-1]["media"]["payload"]))  # type: ignore[index]
                got.append(json.loads(await ws.get_message()))  # the last delta's mark
                await ws.send_message(json.dumps({"event": "stop", "streamSid": SID}))
        stop.set()
        nursery.cancel_scope.cancel()
