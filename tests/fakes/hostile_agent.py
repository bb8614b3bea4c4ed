"""A hostile self-hosted agent (twibridge protocol v1 on the wire, abused): it sends what its
``script`` says once ``start`` arrives, then records everything the bridge sends it."""

from __future__ import annotations

import json
from functools import partial
from typing import Any, Callable

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from fakes import Recorder


class HostileAgent(Recorder):
    """``script(connection_number)`` → the messages (str, or dicts sent as JSON) to send after ``start``."""

    def __init__(self, script: Callable[[int], list[Any]]) -> None:
        super().__init__()
        self.script = script
        self.connections = 0
        self.closed_codes: list[int | None] = []
        self.audio_frames = 0  # binary messages: caller audio
        self.url = ""

    async def serve(self, nursery: trio.Nursery) -> str:
        server = await nursery.start(partial(serve_websocket, self._handle, "127.0.0.1", 0, ssl_context=None,
                                             max_message_size=16 * 1024 * 1024))
        self.url = f"ws://127.0.0.1:{server.port}/agent"
        return self.url

    async def _handle(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        self.connections += 1
        n = self.connections
        try:
            first = await ws.get_message()
            self.record(json.loads(first))
            for msg in self.script(n):
                await ws.send_message(msg if isinstance(msg, (str, bytes)) else json.dumps(msg))
            while True:
                msg = await ws.get_message()
                if isinstance(msg, str):
                    self.record(json.loads(msg))
                else:
                    self.audio_frames += 1
                    self.changed()
        except ConnectionClosed as exc:
            self.closed_codes.append(exc.reason.code)
            self.changed()
