"""The agent-leg floor of twibridge's stack: the least a Trio + Hypercorn bridge to OpenAI can cost per call.

Why: issue #16's goal 3 asks for the agent leg at no more than 1.2× the CPU
per call of Twilio's Python sample (asyncio, uvicorn, websockets).  This
server does only what the sample does, on the parts twibridge is built
from, so the bench can tell how much of twibridge's cost is the stack and
how much is twibridge:

* Hypercorn's trio worker serves a bare ASGI app (no Quart on the path, as
  twibridge's ``/media-stream`` middleware);
* per call one client WebSocket to the Realtime server through
  :func:`twibridge.agents.wsclient.connect_ws` (trio-websocket), each caller
  frame written with twibridge's direct frame write (:mod:`twibridge.agents.wsfast`);
* the sample's protocol, no more: ``session.update``; each ``media`` payload
  forwarded as one ``input_audio_buffer.append`` (base64 copied, not
  decoded); each audio delta sent straight on as one ``media`` and a
  ``mark`` (the sample's ``responsePart``); ``clear`` when the caller starts
  speaking.  No jitter buffer, VAD, pacing, marks,
  records, signatures, limits or logs.

``python -m bench.floor_openai`` (``$BENCH_FAKE_URL``, ``$OPENAI_API_KEY``;
``python -m bench`` sets both) logs ``server.listening`` like ``twibridge serve``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from bench.fakeserver import log
from twibridge.agents.wsclient import connect_ws
from twibridge.agents.wsfast import fast_writer

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SESSION_UPDATE = json.dumps({"type": "session.update", "session": {
    "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"}},
                                  "output": {"format": {"type": "audio/pcmu"}}}}})


async def bridge(receive: Receive, send: Send, url: str, key: str) -> None:
    """One call: Twilio's socket (ASGI) ↔ one Realtime socket, as Twilio's sample does it."""
    sid = ""
    async with connect_ws(url, {"Authorization": f"Bearer {key}"}) as agent:
        fast = fast_writer(agent)

        async def to_agent(text: str) -> None:
            if fast is None or (left := fast.try_write(text)) is None:
                await agent.send_message(text)
            elif left:
                await fast.finish()  # the kernel took part of it

        async def from_agent() -> None:
            while True:
                event = json.loads(await agent.get_message())
                kind = event.get("type")
                if kind in ("response.output_audio.delta", "response.audio.delta") and sid:
                    await send({"type": "websocket.send", "text": json.dumps(
                        {"event": "media", "streamSid": sid, "media": {"payload": event["delta"]}})})
                    await send({"type": "websocket.send", "text": json.dumps(
                        {"event": "mark", "streamSid": sid, "mark": {"name": "responsePart"}})})
                elif kind == "input_audio_buffer.speech_started" and sid:
                    await send({"type": "websocket.send", "text": json.dumps({"event": "clear", "streamSid": sid})})

        await to_agent(SESSION_UPDATE)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(from_agent)
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    break
                data = json.loads(message.get("text") or message.get("bytes") or b"{}")
                event = data.get("event")
                if event == "media":
                    await to_agent('{"type":"input_audio_buffer.append","audio":"' + data["media"]["payload"] + '"}')
                elif event == "start":
                    sid = data["start"]["streamSid"]
                elif event == "stop":
                    break
            nursery.cancel_scope.cancel()


def make_app(url: str, key: str) -> Callable[[Message, Receive, Send], Awaitable[None]]:
    async def app(scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok\n"})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        try:
            await bridge(receive, send, url, key)
        except Exception as exc:  # noqa: BLE001 — one call's failure, said on stderr like a server log line
            log("call.failed", error=repr(exc))
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await send({"type": "websocket.close", "code": 1000})
                except Exception:  # noqa: BLE001 — the caller is gone already
                    pass

    return app


async def main_async(url: str, key: str) -> None:
    """Everything is imported before ``server.listening``, so the bench's idle RSS is the server's."""
    import socket

    sock = socket.socket()  # bound here, handed to Hypercorn by fd: listening before the line is logged
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn's now: it closes it
    config.accesslog = config.errorlog = None
    stop = trio.Event()

    async def signals() -> None:
        import signal

        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
            async for _ in received:
                stop.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(signals)
        log("server.listening", url=f"http://127.0.0.1:{port}")
        await serve(make_app(url, key), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()


def main() -> int:
    url, key = os.environ.get("BENCH_FAKE_URL", ""), os.environ.get("OPENAI_API_KEY", "")
    if not url.startswith(("ws://127.0.0.1", "ws://localhost")) or not key:
        sys.exit("BENCH_FAKE_URL (the bench's loopback fake) and OPENAI_API_KEY are required; python -m bench sets them")
    trio.run(main_async, url, key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
