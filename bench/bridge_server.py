"""twibridge's call runner behind a chosen transport and agent, for the bench.

``python -m bench.bridge_server --transport quart --agent passthrough`` runs
the production app (:func:`twibridge.server.app.serve`, Quart-Trio on
Hypercorn) with the passthrough test agent injected through
``Runtime.provider_factory``.  ``--transport tws`` runs the *same*
:class:`twibridge.call.runner.Call` on a plain ``trio_websocket.serve_websocket``
route instead: the difference between the two is what Quart + Hypercorn's
WebSocket layer costs (a diagnostic for ``docs/benchmarks.md``; no
signature check, webhook or health route on this one).  ``--transport raw``
runs it on :mod:`bench.wsraw`'s minimal server side (no wsproto): what is
left is the call runner's own cost.

Config comes from the environment (``TWIBRIDGE_*``), like ``twibridge serve``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from functools import partial
from typing import Any

import trio


class TrioWsTransport:
    """A trio-websocket connection as a :class:`twibridge.call.runner.Transport`."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def receive(self) -> str | bytes:
        from trio_websocket import ConnectionClosed

        from twibridge.twilio.protocol import RemoteProtocolError

        try:
            data: str | bytes = await self.ws.get_message()
        except ConnectionClosed:
            raise RemoteProtocolError("socket closed without stop") from None
        return data

    async def send(self, data: str) -> None:
        await self.ws.send_message(data)

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.aclose(code, reason)


class RawWsTransport:
    """A :mod:`bench.wsraw` server socket as a :class:`twibridge.call.runner.Transport` (no wsproto at all)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def receive(self) -> str | bytes:
        from bench.wsraw import OP_TEXT
        from twibridge.twilio.protocol import RemoteProtocolError

        msg = await self.ws.receive()
        if msg is None:
            raise RemoteProtocolError("socket closed without stop")
        op, payload = msg
        return payload.decode() if op == OP_TEXT else bytes(payload)

    async def send(self, data: str) -> None:
        from bench.wsraw import OP_TEXT, server_frame

        await self.ws.send(server_frame(OP_TEXT, data.encode()))

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.aclose(code)


async def serve_raw(rt: Any, host: str, port: int) -> None:
    from bench.wsraw import accept
    from twibridge.call.runner import Call
    from twibridge.logs import get_logger

    log = get_logger("twibridge.server")

    async def handler(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(10):
                got = await accept(stream)
            if got is not None:
                await Call(RawWsTransport(got[2]), rt, "").run()
        finally:
            await stream.aclose()

    listeners = await trio.open_tcp_listeners(port, host=host)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handler, listeners)
        log.info("server.listening", url=f"http://{host}:{listeners[0].socket.getsockname()[1]}", provider="bench-raw")
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


async def serve_tws(rt: Any, host: str, port: int) -> None:
    from trio_websocket import serve_websocket

    from twibridge.call.runner import Call
    from twibridge.logs import get_logger

    log = get_logger("twibridge.server")

    async def handler(request: Any) -> None:
        ws = await request.accept()
        await Call(TrioWsTransport(ws), rt, "").run()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, handler, host, port, ssl_context=None,
                                             max_message_size=rt.config.server.max_message_bytes))
        log.info("server.listening", url=f"http://{host}:{server.port}", provider="bench-tws")
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bridge_server")
    p.add_argument("--transport", choices=["quart", "tws", "raw"], default="quart")
    p.add_argument("--agent", choices=["config", "passthrough"], default="config",
                   help="config: the provider the config names; passthrough: bench.passthrough_agent")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)

    from twibridge import logs
    from twibridge.config import load_config
    from twibridge.server.app import make_runtime

    cfg = load_config(None, os.environ)
    logs.configure(cfg.log.level, cfg.log.format, cfg.secrets())
    rt = make_runtime(cfg)
    if args.agent == "passthrough":
        from bench.passthrough_agent import PassthroughProvider

        rt.provider_factory = PassthroughProvider  # type: ignore[assignment]  # takes the Config it is given
    if args.transport == "quart":
        from twibridge.server.app import serve

        trio.run(partial(serve, cfg, host=args.host, port=args.port, rt=rt))
    elif args.transport == "tws":
        trio.run(serve_tws, rt, args.host, args.port)
    else:
        trio.run(serve_raw, rt, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
