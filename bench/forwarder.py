"""The first-audio baseline: a direct forwarder between Twilio and a protocol-v1 agent.

A bare ``trio_websocket.serve_websocket`` server (like :mod:`bench.baseline_echo`)
that, per call, dials the agent (``--agent-url``, :mod:`bench.wsraw`), sends
``start``, forwards every caller frame as a binary message, and sends each
agent ``audio`` message straight on as one ``media`` (its base64 copied, not
decoded): no pacing, no marks, no turn logic, no barge-in.  The least a
bridge can add to the agent's first audio; also what Twilio's Python sample
does with OpenAI's deltas.  Logs ``server.listening`` and ``call.ended``
(with ``frames_in``) like ``twibridge serve``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from functools import partial
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from bench.wsraw import OP_BINARY, OP_TEXT, RawWebSocket, frame, text


def log(event: str, **kw: object) -> None:
    sys.stderr.write(json.dumps({"event": event, **kw}) + "\n")
    sys.stderr.flush()


async def forward_agent(agent: RawWebSocket, ws: WebSocketConnection, sid: str) -> None:
    while (msg := await agent.receive()) is not None:
        op, data = msg
        if op != OP_TEXT or not data.startswith(b'{"type":"audio"'):
            continue
        i = data.index(b'"audio":"', 15) + 9
        payload = data[i:data.index(b'"', i)].decode()
        await ws.send_message(f'{{"event":"media","streamSid":"{sid}","media":{{"payload":"{payload}"}}}}')


async def call(ws: WebSocketConnection, agent_url: str) -> None:
    frames_in, call_sid = 0, ""
    u = urlsplit(agent_url)
    try:
        while True:
            d = json.loads(await ws.get_message())
            if d.get("event") == "start":
                break
        sid, call_sid = d["streamSid"], d["start"]["callSid"]
        agent = await RawWebSocket.connect(u.hostname or "127.0.0.1", u.port or 80, u.path or "/")
        try:
            start = {"type": "start", "version": 1, "call": {"call_sid": call_sid, "stream_sid": sid, "from": "",
                                                             "to": "", "params": {}},
                     "audio": {"encoding": "mulaw", "sample_rate": 8000}}
            await agent.send(text(json.dumps(start)))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward_agent, agent, ws, sid)
                while True:
                    d = json.loads(await ws.get_message())
                    ev = d.get("event")
                    if ev == "media":
                        frames_in += 1
                        await agent.send(frame(OP_BINARY, base64.b64decode(d["media"]["payload"])))
                    elif ev == "stop":
                        break
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await agent.aclose()
        await ws.aclose(1000)
    except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        log("call.ended", call_sid=call_sid, frames_in=frames_in)


async def main_async(host: str, port: int, agent_url: str) -> None:
    async def handler(request: WebSocketRequest) -> None:
        await call(await request.accept(), agent_url)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, handler, host, port, ssl_context=None,
                                             max_message_size=1 << 20))
        log("server.listening", url=f"http://{host}:{server.port}", provider="forwarder")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.forwarder", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--agent-url", default=os.environ.get("BENCH_AGENT_URL", ""),
                   help="ws://host:port/agent (bench.fake_agent); default $BENCH_AGENT_URL")
    args = p.parse_args(argv)
    if not args.agent_url:
        p.error("--agent-url or BENCH_AGENT_URL is required")
    try:
        trio.run(main_async, args.host, args.port, args.agent_url)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
