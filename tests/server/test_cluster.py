"""Two ``twibridge serve`` processes sharing one real Redis: the cluster behaves as one bridge.

Each test is bounded with ``trio.fail_after``; TTLs are the config minimum
(``record_ttl_s = 5``), so the crash-expiry wait is at most ~5 s.
"""

from __future__ import annotations

import json
import signal
from typing import Any, AsyncIterator

import pytest
import trio
import trio_websocket

from process_support import ServerProcess, base_env, run_calls_cli, voice_verbs
from redis_support import RedisServer, needs_redis, redis_server  # noqa: F401 (fixture)
from support import Leg, frames, media_socket, sid, silence, tone

pytestmark = [needs_redis, pytest.mark.redis]

RECORD_TTL_S = 5
BUSY, SERVED = ["Say", "Hangup"], ["Connect", "Hangup"]


def cluster_env(redis_url: str, **extra: str) -> dict[str, str]:
    return base_env(TWIBRIDGE_STATE_BACKEND="redis", TWIBRIDGE_STATE_REDIS_URL=redis_url,
                    TWIBRIDGE_STATE_RECORD_TTL_S=str(RECORD_TTL_S), TWIBRIDGE_STATE_TIMEOUT_S="0.5",
                    TWIBRIDGE_SERVER_DRAIN_TIMEOUT_S="1", **extra)


class Cluster:
    """Server processes started in one nursery, all reaped on exit."""

    def __init__(self, nursery: trio.Nursery, env: dict[str, str]) -> None:
        self.nursery, self.env = nursery, env
        self.procs: list[ServerProcess] = []

    async def start(self) -> ServerProcess:
        sp = ServerProcess(self.env)
        self.procs.append(sp)
        return await sp.start(self.nursery)

    async def reap(self) -> None:
        with trio.CancelScope(shield=True):
            for sp in self.procs:
                if sp.proc is not None:
                    await sp.stop(timeout=5)


async def started(sp: ServerProcess, n: int) -> None:
    await sp.wait_for(lambda l: l.get("event") == "call.started", count=n)


async def echo_round(leg: Leg, ms: int = 500) -> int:
    """Speak ``ms`` of tone, then quiet; the bytes of echo heard back."""
    before = len(leg.audio)
    for f in frames(tone(ms, 440) + silence(700)):
        await leg.media(f)
    await leg.collect(until_ms_of_audio=(before // 8) + ms - 150, idle_s=3)
    return len(leg.audio) - before


async def test_duplicate_cap_crash_expiry_and_history(redis_server: RedisServer) -> None:
    env = cluster_env(redis_server.url, TWIBRIDGE_SERVER_MAX_CALLS="1")
    with trio.fail_after(45):
        async with trio.open_nursery() as nursery:
            cluster = Cluster(nursery, env)
            try:
                a, b = await cluster.start(), await cluster.start()
                async with media_socket(a.url) as ws1:
                    leg1 = Leg(ws1, 1)
                    await leg1.start({"CallSid": leg1.call_sid, "From": "+15550001"})
                    await started(a, 1)
                    # the same CallSid streamed to B: refused, whatever process holds it
                    async with media_socket(b.url) as dup:
                        await Leg(dup, 1).start()
                        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                            with trio.fail_after(5):
                                await dup.get_message()
                    assert closed.value.reason.code == 1008
                    await b.wait_for(lambda l: l.get("event") == "call.duplicate_refused")
                    # max_calls = 1 is cluster-wide: B is busy while A has a call
                    assert await voice_verbs(b.url, sid("CA", 50)) == BUSY
                    assert await echo_round(leg1) > 0
                    await leg1.stop()
                    await a.wait_for(lambda l: l.get("event") == "call.ended")
                # answered by B; its stream starts on A below (an answered /voice holds a
                # max_calls reservation until then, or until its token expires)
                assert await voice_verbs(b.url, sid("CA", 2)) == SERVED

                # A crashes mid-call: its record holds the cap until its TTL runs out
                async with media_socket(a.url) as ws2:
                    await Leg(ws2, 2).start()
                    await started(a, 2)
                    a.signal(signal.SIGKILL)
                    killed_at = trio.current_time()
                    assert await voice_verbs(b.url, sid("CA", 52)) == BUSY
                    while await voice_verbs(b.url, sid("CA", 53)) != SERVED:
                        await trio.sleep(0.25)
                    freed_after = trio.current_time() - killed_at
                assert RECORD_TTL_S * 2 / 3 - 0.5 <= freed_after <= RECORD_TTL_S + 1.0

                # a new instance (and the CLI) still see the summary written before the crash
                a2 = await cluster.start()
                # (CA53 again: Twilio's retry of a /voice whose stream has not started is answered
                # again, on any instance, and holds the same reservation)
                assert await voice_verbs(a2.url, sid("CA", 53)) == SERVED
                rc, out, err = await run_calls_cli(env, "--json", "--limit", "5")
                assert rc == 0, err
                listing = json.loads(out)
                assert listing["live"] == []
                recent = {s["call_sid"]: s for s in listing["recent"]}
                assert recent[sid("CA", 1)]["outcome"] == "completed"
                assert recent[sid("CA", 1)]["from_number"] == "+15550001"
                assert sid("CA", 2) not in recent  # crashed: no summary, only the expired record
                rc, table, _ = await run_calls_cli(env, "--limit", "5")
                assert rc == 0 and sid("CA", 1) in table and "Live calls (0)" in table
            finally:
                await cluster.reap()
    assert redis_server.url not in json.dumps(a.lines + b.lines)


async def test_redis_stopped_mid_test_calls_continue(redis_server: RedisServer) -> None:
    env = cluster_env(redis_server.url)
    with trio.fail_after(45):
        async with trio.open_nursery() as nursery:
            cluster = Cluster(nursery, env)
            try:
                a, b = await cluster.start(), await cluster.start()
                async with media_socket(a.url) as ws1:
                    leg1 = Leg(ws1, 11)
                    await leg1.start()
                    await started(a, 1)
                    assert await echo_round(leg1) > 0
                    redis_server.stop()
                    # the live call keeps working
                    assert await echo_round(leg1) > 0
                    # new calls: B answers the webhook and serves a stream on local state
                    assert await voice_verbs(b.url, sid("CA", 12)) == SERVED
                    async with media_socket(b.url) as ws2:
                        leg2 = Leg(ws2, 12)
                        await leg2.start()
                        await started(b, 1)
                        assert await echo_round(leg2) > 0
                        await leg2.stop()
                    await leg1.stop()
                    ended = await a.wait_for(lambda l: l.get("event") == "call.ended")
                    assert ended["outcome"] == "completed"
                    ended = await b.wait_for(lambda l: l.get("event") == "call.ended")
                    assert ended["outcome"] == "completed"
                # each process warned once for the outage, not per operation
                for sp in (a, b):
                    assert len(sp.events("registry.redis_unavailable")) == 1, sp.lines
                for sp in (a, b):
                    assert await sp.stop() == 0
            finally:
                await cluster.reap()
