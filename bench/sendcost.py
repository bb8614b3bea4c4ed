"""Process CPU per 20 ms caller frame sent to an agent, by send path: ``python -m bench.sendcost``.

The agent leg sends every caller frame (160 bytes, 50 a second per call) as
one WebSocket message; issue #16's profile put ~40 % of the server's CPU
there.  This measures, in this process only (the receiving end is a plain
blocking socket reader in a child process, so its cost is not counted):

* trio ``SocketStream.send_all`` of a ready-made frame (the floor);
* websockets' Sans-I/O ``ClientProtocol`` framing + ``send_all`` (only if
  the ``websockets`` package is installed: it is not a twibridge dependency);
* trio-websocket ``send_message`` (what ``AgentSocket`` wraps);
* ``AgentSocket.send`` (its lock and the shielded, bounded send).

Numbers only mean something side by side, from the same run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Awaitable, Callable

import trio

from twibridge.agents.websocket import AgentSocket

#: The child: accepts connections one after the other, answers an upgrade, then reads and drops everything.
SINK = r"""
import base64, hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        data += c.recv(4096)
    key = [l.split(b":", 1)[1].strip() for l in data.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")]
    if key:
        acc = base64.b64encode(hashlib.sha1(key[0] + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    while c.recv(1 << 16):
        pass
    c.close()
"""
FRAME = b"\xff" * 160


async def cpu_per_call(send: Callable[[], Awaitable[None]], n: int) -> float:
    for _ in range(n // 10):
        await send()
    t = time.process_time()
    for _ in range(n):
        await send()
    return (time.process_time() - t) / n * 1e6


async def run(n: int) -> list[tuple[str, float]]:
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE)
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline())
        out = []
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"\r\n\r\n")
        raw = b"\x82\x80\0\0\0\0" + FRAME  # a masked binary frame, zero key
        out.append(("trio send_all, ready-made frame", await cpu_per_call(lambda: stream.send_all(raw), n)))
        await stream.aclose()
        try:
            from websockets.client import ClientProtocol
            from websockets.uri import parse_uri
        except ImportError:
            out.append(("websockets Sans-I/O + send_all (websockets not installed)", float("nan")))
        else:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/agent"))
            proto.send_request(proto.connect())
            for data in proto.data_to_send():
                await stream.send_all(data)
            while not proto.events_received():
                proto.receive_data(await stream.receive_some(4096))

            async def ws_sansio() -> None:
                proto.send_binary(FRAME)
                for data in proto.data_to_send():
                    await stream.send_all(data)

            out.append(("websockets Sans-I/O ClientProtocol + send_all", await cpu_per_call(ws_sansio, n)))
            await stream.aclose()
        async with trio.open_nursery() as nursery:
            sock = await AgentSocket.open(nursery, f"ws://127.0.0.1:{port}/agent", {}, "agent")
            out.append(("trio-websocket send_message", await cpu_per_call(lambda: sock.ws.send_message(FRAME), n)))
            out.append(("AgentSocket.send", await cpu_per_call(lambda: sock.send(FRAME), n)))
            with trio.move_on_after(0.5):
                await sock.aclose()
            nursery.cancel_scope.cancel()
        return out
    finally:
        sink.kill()
        sink.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sendcost", description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=20000)
    args = p.parse_args(argv)
    print("| send path (160-byte frame) | process CPU µs per send |\n|---|---:|")
    for what, us in trio.run(run, args.frames):
        print(f"| {what} | {us:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
