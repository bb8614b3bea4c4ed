"""`twibridge serve` as a real process: start, SIGTERM drain with a live call, exit 0."""

from __future__ import annotations

import json
import os
import signal
import sys
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from support import TOKEN, Leg, media_socket, post_signed

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class ServeProcess:
    """``twibridge serve`` on 127.0.0.1 with an ephemeral port, read from its log."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.url = ""
        self.lines: list[dict[str, Any]] = []
        self.proc: trio.Process | None = None
        self._line_event = trio.Event()

    async def start(self, nursery: trio.Nursery) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TWIBRIDGE_")}
        env.update({"TWIBRIDGE_TWILIO_AUTH_TOKEN": TOKEN, **self.env})
        self.proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "twibridge", "serve", "--port", "0"], env=env, stderr=-1)
        nursery.start_soon(self._read_log)
        with trio.fail_after(20):
            while not self.url:
                if self.proc.returncode is not None or self.proc.poll() is not None:
                    raise AssertionError(f"serve exited early: {self.lines}")
                with trio.move_on_after(1):
                    await self._line_event.wait()

    async def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        buf = b""
        async for chunk in self.proc.stderr:
            buf += chunk
            *complete, buf = buf.split(b"\n")
            for raw in complete:
                try:
                    line = json.loads(raw)
                except ValueError:
                    line = {"event": "raw", "text": raw.decode(errors="replace")}
                self.lines.append(line)
                if line.get("event") == "server.listening":
                    self.url = line["url"]
            self._line_event.set()
            self._line_event = trio.Event()


async def test_sigterm_drains_live_calls_then_exits_zero() -> None:
    sp = ServeProcess({"TWIBRIDGE_SERVER_DRAIN_TIMEOUT_S": "1.0", "TWIBRIDGE_LOG_LEVEL": "info"})
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            await sp.start(nursery)
            assert sp.proc is not None
            async with media_socket(sp.url) as ws:
                leg = Leg(ws, 42)
                await leg.start()
                async with httpx.AsyncClient() as client:
                    while (await client.get(sp.url + "/healthz")).json()["calls"] != 1:
                        await trio.sleep(0.02)
                    sp.proc.send_signal(signal.SIGTERM)
                    while (await client.get(sp.url + "/healthz")).json()["status"] != "draining":
                        await trio.sleep(0.02)
                busy = await post_signed(sp.url, "/voice", {"CallSid": "CA" + "1" * 32, "From": "+1", "To": "+2"})
                assert [c.tag for c in ET.fromstring(busy.text)] == ["Say", "Hangup"]
                # the live call keeps working during the drain, then closes 1001
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
                assert closed.value.reason.code == 1001
            assert await sp.proc.wait() == 0
    ended = [line for line in sp.lines if line.get("event") == "call.ended"]
    assert ended and ended[0]["outcome"] == "shutdown"
    assert TOKEN not in json.dumps(sp.lines)
