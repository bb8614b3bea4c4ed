"""SIGTERM with live calls, in a real ``twibridge serve`` process: what test_serve_process does not cover.

* a call that ends by itself during the drain is served to the end (its
  echo heard whole), ends ``completed`` with 1000, not 1001;
* a call still live when ``drain_timeout_s`` runs out closes 1001 then,
  neither earlier nor much later;
* the webhook answers the busy TwiML with ``[fallback] dial`` during the
  drain, ``/healthz`` and ``/metrics`` say draining;
* with no call left the process exits at once, not after ``drain_timeout_s``,
  also when the last socket never sent ``start``.
"""

from __future__ import annotations

import signal
import sys
import xml.etree.ElementTree as ET

import httpx
import pytest
import trio
import trio_websocket

from process_support import ServerProcess, base_env
from support import Leg, correlation, frames, make_config, media_socket, post_signed, sid, silence, tone
from twibridge import __version__
from twibridge.server.app import make_runtime, serve

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
VOICE = {"AccountSid": "AC" + "0" * 32, "From": "+15005550006", "To": "+15005550001"}
DIAL = "+15005550100"


async def get(url: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(url + path)


async def closed_code(ws: trio_websocket.WebSocketConnection) -> int:
    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    return closed.value.reason.code


async def test_drain_serves_finishing_calls_and_closes_lingering_ones_at_the_deadline() -> None:
    drain_s = 3.0
    sp = ServerProcess(base_env(TWIBRIDGE_SERVER_DRAIN_TIMEOUT_S=str(drain_s), TWIBRIDGE_FALLBACK_DIAL=DIAL))
    utterance = tone(700, 350)
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            await sp.start(nursery)
            async with media_socket(sp.url) as lingering, media_socket(sp.url) as finishing:
                await Leg(lingering, 1).start()
                leg = Leg(finishing, 2)
                await leg.start()
                await sp.calls_started(2)

                sp.signal(signal.SIGTERM)
                t0 = trio.current_time()
                await sp.wait_for(lambda line: line.get("event") == "server.draining")
                health = (await get(sp.url, "/healthz")).json()
                metrics = (await get(sp.url, "/metrics")).text
                busy = await post_signed(sp.url, "/voice", {**VOICE, "CallSid": sid("CA", 9)})

                # the finishing call talks, hears its echo and hangs up, all during the drain
                for f in frames(utterance + silence(700)):
                    await leg.media(f)
                await leg.collect(until_ms_of_audio=len(utterance) // 8 - 40, idle_s=3)
                await leg.stop()
                finishing_code = await closed_code(finishing)
                finished_at = trio.current_time() - t0

                lingering_code = await closed_code(lingering)
                lingered = trio.current_time() - t0
            assert await sp.proc.wait() == 0
            exited = trio.current_time() - t0

    assert health == {"status": "draining", "calls": 2, "version": __version__}
    assert "twibridge_draining 1.0" in metrics and "twibridge_active_calls 2.0" in metrics
    root = ET.fromstring(busy.text)
    assert [c.tag for c in root][:2] == ["Say", "Dial"] and root.findtext("Dial") == DIAL
    assert finishing_code == 1000 and finished_at < drain_s
    assert correlation(utterance, bytes(leg.audio)) > 0.9 and len(leg.audio) >= len(utterance) - 320
    assert lingering_code == 1001 and drain_s - 0.2 <= lingered <= drain_s + 2.0
    assert exited <= drain_s + 5.0
    outcomes = {e["call_sid"]: e["outcome"] for e in sp.events("call.ended")}
    assert outcomes == {sid("CA", 1): "shutdown", sid("CA", 2): "completed"}


async def test_no_live_calls_left_means_exit_at_once() -> None:
    sp = ServerProcess(base_env(TWIBRIDGE_SERVER_DRAIN_TIMEOUT_S="30"))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await sp.start(nursery)
            async with media_socket(sp.url) as ws:
                leg = Leg(ws, 3)
                await leg.start()
                await sp.calls_started(1)
                await sp.drain()
                t0 = trio.current_time()
                await leg.stop()
                assert await closed_code(ws) == 1000
            assert await sp.proc.wait() == 0
            exited = trio.current_time() - t0
    assert exited < 3.0  # the last call ended: no waiting out the 30 s drain
    assert [e["outcome"] for e in sp.events("call.ended")] == ["completed"]


async def test_a_socket_that_never_started_does_not_hold_the_drain() -> None:
    """Such a socket is pending, not a call: when it goes, the drain is over (not at drain_timeout_s)."""
    cfg = make_config(server={"drain_timeout_s": 20})
    rt = make_runtime(cfg)
    stop = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(lambda task_status: serve(cfg, host="127.0.0.1", port=0, rt=rt,
                                                                shutdown_trigger=stop.wait, task_status=task_status))
            async with media_socket(url):
                while not rt.pending:
                    await trio.sleep(0.01)  # the accept happens in the server's tasks
                stop.set()
                await rt.stopping.wait()
                t0 = trio.current_time()
            # the socket is gone; serve() returns when the drain is over
        assert trio.current_time() - t0 < 2.0
    assert rt.pending == 0 and rt.calls == {}
