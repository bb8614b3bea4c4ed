"""The baseline: a bare trio-websocket Media Streams echo server (no Quart, no codec, no twibridge).

The same toy semantics as the bridge with its echo (or passthrough) agent,
so the bench can show what our stack costs on top of the cheapest honest
Trio server:

* every inbound frame is parsed (``json.loads`` + base64) and counted;
* ``--mode echo``: a frame is "voiced" unless it is digital silence (no
  codec, no dBFS); 300 ms of voice starts an utterance (with pre-roll),
  500 ms of silence ends it and the utterance is played back; voice during
  a reply for 300 ms is a barge-in (``clear``);
* ``--mode passthrough``: every frame is played back as it comes; a frame
  tagged ``BRG!`` is a barge-in;
* playback like the bridge: 100 ms chunks, a ``mark`` after each
  (``g<gen>:<turn>:<ms>``), paced on absolute deadlines with ≤200 ms lead.

Logs ``server.listening`` and one ``call.ended`` JSON line per call on
stderr, like ``twibridge serve``.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections import deque
from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

FRAME_BYTES = 160
SILENCE = b"\xff" * FRAME_BYTES
CHUNK_BYTES, LEAD_S = 800, 0.2
DEBOUNCE_FRAMES, END_FRAMES, PREROLL_FRAMES = 15, 25, 20
BARGE_TAG = b"BRG!"


def log(event: str, **kw: object) -> None:
    sys.stderr.write(json.dumps({"event": event, **kw}) + "\n")
    sys.stderr.flush()


class EchoCall:
    def __init__(self, ws: WebSocketConnection, mode: str) -> None:
        self.ws, self.mode = ws, mode
        self.sid = self.call_sid = ""
        self.frames_in = self.marks_in = 0
        self.lock = trio.Lock()
        self.gen = self.turn = 0
        self.play_end = 0.0
        self.replies_send, self.replies_recv = trio.open_memory_channel[bytes](8)
        self.scope: trio.CancelScope | None = None
        # echo mode
        self.voiced_run = self.quiet_run = 0
        self.preroll: deque[bytes] = deque(maxlen=PREROLL_FRAMES)
        self.utterance: list[bytes] | None = None
        # passthrough mode
        self.stream = bytearray()
        self.changed = trio.Event()

    async def send(self, text: str) -> None:
        async with self.lock:
            await self.ws.send_message(text)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.writer if self.mode == "echo" else self.streamer)
                while True:
                    d = json.loads(await self.ws.get_message())
                    ev = d.get("event")
                    if ev == "media":
                        self.frames_in += 1
                        await self.on_frame(base64.b64decode(d["media"]["payload"]))
                    elif ev == "start":
                        self.sid, self.call_sid = d["streamSid"], d["start"]["callSid"]
                    elif ev == "mark":
                        self.marks_in += 1
                    elif ev == "stop":
                        break
                nursery.cancel_scope.cancel()
            await self.ws.aclose(1000)
        except ConnectionClosed:
            pass
        finally:
            log("call.ended", call_sid=self.call_sid, frames_in=self.frames_in, frames_dropped=0,
                marks_in=self.marks_in)

    async def on_frame(self, frame: bytes) -> None:
        if self.mode == "passthrough":
            if frame[:4] == BARGE_TAG:
                await self.barge_in()
            else:
                self.stream += frame
                self.changed.set()
            return
        voiced = frame != SILENCE
        self.voiced_run = self.voiced_run + 1 if voiced else 0
        self.quiet_run = 0 if voiced else self.quiet_run + 1
        if self.utterance is None:
            self.preroll.append(frame)
            if self.voiced_run >= DEBOUNCE_FRAMES:
                self.utterance = list(self.preroll)
                if self.scope is not None or self.play_end > trio.current_time():
                    await self.barge_in()
        else:
            self.utterance.append(frame)
            if self.quiet_run >= END_FRAMES:
                reply = b"".join(self.utterance[:-END_FRAMES])
                self.utterance = None
                self.preroll.clear()
                try:
                    self.replies_send.send_nowait(reply)
                except trio.WouldBlock:
                    pass

    async def barge_in(self) -> None:
        if self.scope is not None:
            self.scope.cancel()
        self.stream.clear()
        self.gen += 1
        self.play_end = trio.current_time()
        await self.send(json.dumps({"event": "clear", "streamSid": self.sid}))

    async def send_chunk(self, chunk: bytes, sent_ms: int) -> None:
        payload = base64.b64encode(chunk).decode()
        async with self.lock:
            await self.ws.send_message(
                f'{{"event":"media","streamSid":"{self.sid}","media":{{"payload":"{payload}"}}}}')
            self.play_end = max(self.play_end, trio.current_time()) + len(chunk) / 8000
            await self.ws.send_message(json.dumps(
                {"event": "mark", "streamSid": self.sid, "mark": {"name": f"g{self.gen}:{self.turn}:{sent_ms}"}}))

    async def writer(self) -> None:
        async for reply in self.replies_recv:
            self.turn += 1
            sent = 0
            with trio.CancelScope() as self.scope:
                for i in range(0, len(reply), CHUNK_BYTES):
                    await trio.sleep_until(self.play_end - LEAD_S)
                    chunk = reply[i:i + CHUNK_BYTES]
                    sent += len(chunk) // 8
                    await self.send_chunk(chunk, sent)
            self.scope = None

    async def streamer(self) -> None:
        """Passthrough: send what has arrived in chunks of ≤100 ms, never letting the caller run dry."""
        while True:
            self.turn += 1
            sent, gen = 0, self.gen
            while gen == self.gen:
                if len(self.stream) < CHUNK_BYTES:
                    deadline = self.play_end - 0.04 if self.stream else float("inf")
                    with trio.move_on_at(deadline):
                        self.changed = trio.Event()
                        await self.changed.wait()
                        continue
                await trio.sleep_until(self.play_end - LEAD_S)
                if gen != self.gen or not self.stream:
                    continue
                chunk = bytes(self.stream[:CHUNK_BYTES])
                del self.stream[:CHUNK_BYTES]
                sent += len(chunk) // 8
                await self.send_chunk(chunk, sent)


async def main_async(host: str, port: int, mode: str) -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await EchoCall(ws, mode).run()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, handler, host, port, ssl_context=None,
                                             max_message_size=65536))
        log("server.listening", url=f"http://{host}:{server.port}", provider=f"baseline-{mode}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.baseline_echo")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--mode", choices=["echo", "passthrough"], default="echo")
    args = p.parse_args(argv)
    try:
        trio.run(main_async, args.host, args.port, args.mode)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
