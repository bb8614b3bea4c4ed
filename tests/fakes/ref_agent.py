"""Reference agent for twibridge agent protocol v1 (``docs/agent-protocol.md``).

A complete, small agent that the tests drive and that doubles as the
example for anyone writing one in another language.  Per connection:

1. Expect ``start`` first; refuse another version with a fatal ``error``.
2. Binary frames are caller audio: a simple energy VAD finds turns.  When
   the caller stops, reply (a tone, or their words echoed) as ``audio``
   messages of ``chunk_ms`` each for a fresh ``item_id``, then ``reply_done``,
   plus ``transcript`` lines.
3. If the caller starts talking while a reply is still being produced, stop
   it and send ``clear`` (agent-side barge-in).  ``interrupt`` from the
   bridge stops the named reply too (the bridge decided first).
4. DTMF ``#`` → ``hangup``; ``0`` → ``transfer`` to ``transfer_to``; ``*`` →
   one ``tool_call`` per entry of ``tool_calls`` (all at once), and each
   ``tool_result`` is answered with a reply (it "reads the result out").
5. ``stop`` → close normally.

Run it standalone: ``cd tests && python -m fakes.ref_agent --port 9000``,
then set ``[agent] provider = "websocket"`` and
``[agent.websocket] url = "ws://127.0.0.1:9000/agent"``.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
from functools import partial
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from fakes import EnergyVad, Recorder, tone

VERSION = 1


class RefAgent(Recorder):
    """The agent server; ``received`` holds every JSON message (binary audio is counted, not stored)."""

    def __init__(self, *, headers: dict[str, str] | None = None, reply_ms: int = 800, chunk_ms: int = 100,
                 echo: bool = False, pace_s: float = 0.0, transfer_to: str = "+15550001111") -> None:
        super().__init__()
        self.required_headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.reply_ms, self.chunk_ms, self.echo, self.pace_s = reply_ms, chunk_ms, echo, pace_s
        self.transfer_to = transfer_to
        self.reject_status: int | None = None
        self.drop_after_frames: int | None = None  # one-shot: cleared when it fires
        self.refuse_call: str | None = None  # send a fatal error with this message after start
        self.connections = 0
        self.live = 0
        self.audio_frames = 0
        self.audio_in = bytearray()
        self.upgrades: list[dict[str, str]] = []
        self.url = ""
        self.tool_calls: list[tuple[str, dict[str, Any]]] = [("lookup_order", {"order_number": "42"})]
        self.tool_calls_sent = 0

    async def serve(self, nursery: trio.Nursery, port: int = 0) -> str:
        server = await nursery.start(partial(serve_websocket, self._handle, "127.0.0.1", port, ssl_context=None))
        self.url = f"ws://127.0.0.1:{server.port}/agent"
        return self.url

    async def _handle(self, request: WebSocketRequest) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        self.upgrades.append(headers)
        if self.reject_status is not None:
            await request.reject(self.reject_status)
            return
        if any(headers.get(k) != v for k, v in self.required_headers.items()):
            await request.reject(401, body=b"bad credentials")
            return
        ws = await request.accept()
        self.connections += 1
        self.live += 1
        self.changed()
        try:
            await _Conn(self, ws).run()
        finally:
            self.live -= 1
            self.changed()


class _Conn:
    def __init__(self, agent: RefAgent, ws: WebSocketConnection) -> None:
        self.agent, self.ws = agent, ws
        self.vad = EnergyVad()
        self.replies = itertools.count(1)
        self.current: tuple[str, trio.CancelScope] | None = None
        self.frames = 0

    async def send(self, message: dict[str, Any]) -> None:
        try:
            await self.ws.send_message(json.dumps(message))
        except ConnectionClosed:
            pass

    async def run(self) -> None:
        try:
            start = json.loads(await self.ws.get_message())
        except (ConnectionClosed, ValueError, TypeError):
            return
        self.agent.record(start)
        if start.get("type") != "start" or start.get("version") != VERSION:
            await self.send({"type": "error", "fatal": True, "code": "unsupported_version",
                             "message": f"this agent speaks protocol v{VERSION} only"})
            await self.ws.aclose(1008, "unsupported version")
            return
        if self.agent.refuse_call:
            await self.send({"type": "error", "fatal": True, "message": self.agent.refuse_call})
            await self.ws.aclose(1000)
            return
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            if isinstance(start.get("greeting"), str) and start["greeting"]:
                nursery.start_soon(self.reply, tone(self.agent.reply_ms, freq=550.0))  # speaks first (v1.1)
            try:
                while True:
                    raw = await self.ws.get_message()
                    if isinstance(raw, bytes):
                        if not await self.on_audio(raw):
                            break
                    elif not await self.on_message(json.loads(raw)):
                        break
            except ConnectionClosed:
                pass
            nursery.cancel_scope.cancel()

    async def on_audio(self, ulaw: bytes) -> bool:
        self.frames += 1
        self.agent.audio_frames += 1
        self.agent.audio_in += ulaw
        self.agent.changed()
        drop = self.agent.drop_after_frames
        if drop is not None and self.frames >= drop:
            self.agent.drop_after_frames = None  # one-shot: the reconnect may succeed
            await self.ws._stream.aclose()  # noqa: SLF001 — a network failure: no close frame
            return False
        for what, _ in self.vad.feed(ulaw):
            if what == "started" and self.current is not None:
                self.current[1].cancel()
                self.current = None
                await self.send({"type": "clear"})  # agent-side barge-in
            elif what == "stopped":
                heard = bytes(self.vad.utterance)
                await self.send({"type": "transcript", "role": "user", "text": f"({len(heard) // 8} ms of speech)"})
                self.nursery.start_soon(self.reply, heard if self.agent.echo else tone(self.agent.reply_ms))
        return True

    async def on_message(self, message: dict[str, Any]) -> bool:
        self.agent.record(message)
        kind = message.get("type")
        if kind == "stop":
            await self.ws.aclose(1000)
            return False
        if kind == "interrupt" and self.current is not None and self.current[0] == message.get("item_id"):
            self.current[1].cancel()
            self.current = None
        elif kind == "dtmf" and message.get("digit") == "#":
            await self.send({"type": "hangup", "reason": "caller pressed #"})
        elif kind == "dtmf" and message.get("digit") == "0":
            await self.send({"type": "transfer", "to": self.agent.transfer_to})
        elif kind == "dtmf" and message.get("digit") == "*":
            for name, arguments in self.agent.tool_calls:
                self.agent.tool_calls_sent += 1
                await self.send({"type": "tool_call", "call_id": f"tool-{self.agent.tool_calls_sent}", "name": name,
                                 "arguments": arguments})
        elif kind == "tool_result":
            self.nursery.start_soon(self.reply, tone(self.agent.reply_ms, freq=550.0))
        elif kind == "prompt" and isinstance(message.get("text"), str):
            self.nursery.start_soon(self.reply, tone(self.agent.reply_ms, freq=550.0))  # "are you still there?"
        return True  # "mark" and unknown types: nothing to do

    async def reply(self, audio: bytes) -> None:
        item_id = f"reply-{next(self.replies)}"
        with trio.CancelScope() as scope:
            self.current = (item_id, scope)
            step = 8 * self.agent.chunk_ms
            for i in range(0, len(audio), step):
                await self.send({"type": "audio", "item_id": item_id,
                                 "audio": base64.b64encode(audio[i:i + step]).decode()})
                await trio.sleep(self.agent.pace_s)
            await self.send({"type": "reply_done", "item_id": item_id})
            await self.send({"type": "transcript", "role": "assistant", "text": f"({len(audio) // 8} ms reply)"})
        if self.current is not None and self.current[0] == item_id:
            self.current = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--echo", action="store_true", help="echo the caller instead of a tone")
    args = parser.parse_args()

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            agent = RefAgent(echo=args.echo, pace_s=0.05)
            print("reference agent listening on", await agent.serve(nursery, args.port), flush=True)

    trio.run(run)


if __name__ == "__main__":
    main()
