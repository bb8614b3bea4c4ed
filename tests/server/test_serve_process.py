"""`twibridge serve` as a real process: start, SIGTERM drain with a live call, exit 0."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET

import httpx
import pytest
import trio
import trio_websocket

from process_support import ServerProcess, base_env
from support import TOKEN, Leg, media_socket, post_signed
from twibridge import __version__

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


async def test_sigterm_drains_live_calls_then_exits_zero() -> None:
    sp = ServerProcess(base_env(TWIBRIDGE_SERVER_DRAIN_TIMEOUT_S="1.0"))
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            await sp.start(nursery)
            async with media_socket(sp.url) as ws:
                await Leg(ws, 42).start()
                await sp.calls_started(1)
                await sp.drain()
                async with httpx.AsyncClient() as client:
                    assert (await client.get(sp.url + "/healthz")).json() == {"status": "draining", "calls": 1,
                                                                                 "version": __version__}
                busy = await post_signed(sp.url, "/voice", {"CallSid": "CA" + "1" * 32, "AccountSid": "AC" + "1" * 32,
                                                               "From": "+1", "To": "+2"})
                assert [c.tag for c in ET.fromstring(busy.text)] == ["Say", "Hangup"]
                # the live call keeps working during the drain, then closes 1001
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
                assert closed.value.reason.code == 1001
            assert sp.proc is not None and await sp.proc.wait() == 0
    ended = sp.events("call.ended")
    assert ended and ended[0]["outcome"] == "shutdown"
    assert sp.events("server.starting")[0]["version"] == __version__
    assert sp.events("server.heap_frozen")[0]["objects"] > 10_000  # twibridge/server/heap.py
    assert TOKEN not in json.dumps(sp.lines)


@pytest.mark.parametrize(("setting", "warning"), [
    ({"TWIBRIDGE_TWILIO_VALIDATE_SIGNATURES": "false"}, "server.signatures_disabled"),
    ({"TWIBRIDGE_TWILIO_REQUIRE_STREAM_TOKEN": "false"}, "server.stream_tokens_disabled"),
    ({}, None),
])
async def test_weakened_checks_are_a_warning_at_start(setting: dict[str, str], warning: str | None) -> None:
    sp = ServerProcess(base_env(**setting))
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            await sp.start(nursery)
            assert await sp.stop() == 0
    warnings = [line["event"] for line in sp.lines if line.get("level") == "warning"]
    assert warnings == ([warning] if warning else [])
