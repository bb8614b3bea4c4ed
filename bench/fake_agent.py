"""A lean self-hosted agent (twibridge agent protocol v1) that speaks on a clock, for the first-audio bench.

Its own process; a raw WebSocket server (:mod:`bench.wsraw`) so that it costs
little at 50 calls.  Per connection, after ``start``: a reply of
``--reply-ms`` every ``--period-s`` (the first ``--first-s`` after
``start``), whatever the caller says, paced as ``--pacing`` says:

* ``realtime``: 20 ms per ``audio`` message, one every 20 ms on absolute
  deadlines (a streaming TTS);
* ``bursty``: 100 ms per message at twice real time (OpenAI's deltas);
* ``big``: the whole reply in one message.

Every 20 ms of reply audio starts with a tag, ``FA!!`` + reply number +
frame number + ``time.monotonic()`` at the send (``struct "!HHd"``), so the
driver (:mod:`bench.driver` ``--script agent``) times each frame from the
agent's send to the ``media`` that carries it (one monotonic clock for every
process on the machine).  Caller audio, marks and ``stop`` are read and
dropped.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import struct
import sys
import time
from functools import partial

import trio

from bench.wsraw import OP_TEXT, RawWebSocket, accept, server_frame

TAG = b"FA!!"
FRAME_BYTES = 160
FILL = b"\xff" * (FRAME_BYTES - 4 - struct.calcsize("!HHd"))
#: pacing → (frames per message, seconds between messages as a fraction of their audio)
PACINGS = {"realtime": (1, 1.0), "bursty": (5, 0.5), "big": (0, 0.0)}


def log(event: str, **kw: object) -> None:
    sys.stderr.write(json.dumps({"event": event, **kw}) + "\n")
    sys.stderr.flush()


def frames(reply: int, first: int, n: int, sent: float) -> bytes:
    return b"".join(TAG + struct.pack("!HHd", reply, k, sent) + FILL for k in range(first, first + n))


async def speak(ws: RawWebSocket, args: argparse.Namespace) -> None:
    per_msg, pace = PACINGS[args.pacing]
    n_frames = args.reply_ms // 20
    per_msg = per_msg or n_frames
    t0 = trio.current_time() + args.first_s
    reply = 0
    while True:
        start = t0 + reply * args.period_s
        item = f"r{reply}"
        for j, first in enumerate(range(0, n_frames, per_msg)):
            await trio.sleep_until(start + j * per_msg * 0.020 * pace)
            audio = frames(reply, first, min(per_msg, n_frames - first), time.monotonic())
            msg = '{"type":"audio","item_id":"%s","audio":"%s"}' % (item, base64.b64encode(audio).decode())
            await ws.send(server_frame(OP_TEXT, msg.encode()))
        await ws.send(server_frame(OP_TEXT, ('{"type":"reply_done","item_id":"%s"}' % item).encode()))
        reply += 1


async def handle(args: argparse.Namespace, stream: trio.SocketStream) -> None:
    try:
        with trio.move_on_after(10) as cs:
            got = await accept(stream)
        if cs.cancelled_caught or got is None:
            return
        _path, _headers, ws = got
        first = await ws.receive()
        if first is None or b'"start"' not in first[1]:
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(speak, ws, args)
            while await ws.receive() is not None:
                pass
            nursery.cancel_scope.cancel()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


async def main_async(args: argparse.Namespace) -> None:
    listeners = await trio.open_tcp_listeners(args.port, host=args.host)
    port = listeners[0].socket.getsockname()[1]
    log("server.listening", url=f"http://{args.host}:{port}", provider="fake-agent", pacing=args.pacing)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.serve_listeners, partial(handle, args), listeners))
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fake_agent", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--pacing", choices=sorted(PACINGS), default="realtime")
    p.add_argument("--reply-ms", type=int, default=1000)
    p.add_argument("--period-s", type=float, default=1.5)
    p.add_argument("--first-s", type=float, default=0.5)
    args = p.parse_args(argv)
    try:
        trio.run(main_async, args)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
