"""CPU per inbound Twilio ``media`` message in the WebSocket layer alone: ``python -m bench.readcost``.

Why: on the same fake, driver and VM the agent-leg floor of twibridge's stack
(:mod:`bench.floor_openai`, Hypercorn + wsproto + trio-websocket) costs ~1.4–1.6×
the CPU per call of Twilio's sample (uvicorn + websockets, asyncio) though it
takes *fewer* scheduler steps per caller frame.  Each call brings 50 of these
messages a second, so the frame parser's own cost is a first suspect.  No
sockets here: one masked client frame (what Twilio sends) is parsed N times by

* wsproto's ``Connection`` (``receive_data`` + ``events``), what Hypercorn runs;
* websockets' Sans-I/O ``Protocol`` (``receive_data`` + ``events_received``):
  the frame parser of the library the sample's uvicorn serves it with, C-accelerated unmasking included; only if
  ``websockets`` is importable (not a twibridge dependency), e.g.
  ``PYTHONPATH=<a venv with websockets>/lib/python3.11/site-packages:. .venv/bin/python -m bench.readcost``.

Numbers only mean something side by side, from the same run.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Callable

from twibridge.agents.wsfast import mask_frame

N = 50_000


def twilio_frame() -> bytes:
    """A Media Streams ``media`` message as Twilio's client frame (masked, text)."""
    text = json.dumps({"event": "media", "sequenceNumber": "1234", "streamSid": "MZ" + "a" * 32, "media": {
        "track": "inbound", "chunk": "1233", "timestamp": "24660", "payload": base64.b64encode(b"\xff" * 160).decode()}})
    return mask_frame(text.encode(), 0x1, os.urandom(4))


def wsproto_reader() -> Callable[[bytes], None]:
    from wsproto.connection import Connection, ConnectionType

    conn = Connection(ConnectionType.SERVER)

    def feed(data: bytes) -> None:
        conn.receive_data(data)
        (event,) = conn.events()  # exactly one message, or this measures nothing

    return feed


def websockets_reader() -> Callable[[bytes], None] | None:
    try:
        from websockets.protocol import SERVER, Protocol, State
    except ImportError:
        return None
    proto = Protocol(SERVER, state=State.OPEN)  # past the handshake, as for every media message

    def feed(data: bytes) -> None:
        proto.receive_data(data)
        (event,) = proto.events_received()  # exactly one frame per message, or this measures nothing

    return feed


def per_message_us(feed: Callable[[bytes], None], frame: bytes) -> float:
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(N):
            feed(frame)
        best = min(best, time.perf_counter() - t)
    return best / N * 1e6


def main() -> None:
    frame = twilio_frame()
    raw = json.dumps({"event": "media", "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}})
    rows: list[tuple[str, Callable[[bytes], None] | None]] = [
        ("wsproto `Connection` (Hypercorn's parser)", wsproto_reader()),
        ("websockets 15 Sans-I/O `Protocol` (the sample's library, C speedups)", websockets_reader()),
        ("`json.loads` of the message (both do it once)", lambda _: json.loads(raw)),
    ]
    print(f"| parser ({len(frame)}-byte masked text frame) | µs per message |\n|---|---:|")
    for name, feed in rows:
        print(f"| {name} | {'not installed' if feed is None else f'{per_message_us(feed, frame):.2f}'} |")


if __name__ == "__main__":
    main()
