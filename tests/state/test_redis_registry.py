"""RedisRegistry against a real redis-server: claims, TTLs, count, history, outages."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
import trio

from redis_support import RedisServer, needs_redis, redis_server  # noqa: F401 (fixture)
from support import make_config
from twibridge.state import make_registry
from twibridge.state.registry import CallRecord
from twibridge.state.redis_registry import RedisRegistry, RegistryUnavailable

pytestmark = [needs_redis, pytest.mark.redis]

TIMEOUT_S = 0.5


@asynccontextmanager
async def registry(url: str, *, ttl: int = 5, fallback: bool = True,
                   **state: Any) -> AsyncIterator[RedisRegistry]:
    cfg = make_config(state={"backend": "redis", "redis_url": url, "record_ttl_s": 5,
                             "timeout_s": TIMEOUT_S, **state})
    reg = make_registry(cfg) if fallback else RedisRegistry(cfg, fallback=False)
    assert isinstance(reg, RedisRegistry)
    reg.record_ttl_s = ttl  # below the config minimum (5 s) so expiry tests stay short
    try:
        yield reg
    finally:
        await reg.aclose()


def rec(n: int) -> CallRecord:
    return CallRecord(f"CA{n:032x}", f"MZ{n:032x}", "+15550001", "+15550002")


class Metric:
    """Stands in for the Metrics counters the registry feeds."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.value = 0

    def labels(self, op: str) -> Metric:
        self._op = op
        return self

    def inc(self) -> None:
        self.count[self._op] = self.count.get(self._op, 0) + 1

    def set(self, value: int) -> None:
        self.value = value


class FakeMetrics:
    def __init__(self) -> None:
        self.registry_errors = Metric()
        self.registry_degraded = Metric()


async def test_register_refuses_duplicates_across_instances(redis_server: RedisServer) -> None:
    with trio.fail_after(10):
        async with registry(redis_server.url) as a, registry(redis_server.url) as b:
            assert await a.try_register(rec(1))
            assert not await a.try_register(rec(1))  # same process
            assert not await b.try_register(rec(1))  # another instance
            assert await b.try_register(rec(2))
            assert await a.count() == 2 and await b.count() == 2
            live = await b.live()
            assert [r.call_sid for r in live] == [rec(1).call_sid, rec(2).call_sid]
            assert live[0].instance == a.instance and live[0].from_number == "+15550001"


async def test_refresh_keeps_record_and_expiry_frees_it(redis_server: RedisServer) -> None:
    with trio.fail_after(15):
        async with registry(redis_server.url, ttl=1) as a, registry(redis_server.url, ttl=1) as b:
            assert await a.try_register(rec(1))
            assert await a.try_register(rec(2))
            for _ in range(4):  # 2 s, past the 1 s TTL: refresh keeps rec(1) only
                await trio.sleep(0.5)
                await a.refresh(rec(1).call_sid)
            assert await b.count() == 1
            assert [r.call_sid for r in await b.live()] == [rec(1).call_sid]
            assert await b.try_register(rec(2))  # the expired one can be claimed elsewhere
            # a crashed instance: nobody refreshes, so the cluster count drops by itself
            await trio.sleep(1.3)
            assert await b.count() == 0


async def test_unregister_keeps_summary_in_history_across_instances(redis_server: RedisServer) -> None:
    with trio.fail_after(10):
        async with registry(redis_server.url) as a:
            for n in (1, 2, 3):
                assert await a.try_register(rec(n))
            for n in (1, 2, 3):
                await a.unregister(rec(n).call_sid, {"call_sid": rec(n).call_sid, "outcome": "completed",
                                                     "duration_s": float(n), "jitter": {"gap_ms": 0}})
            assert await a.count() == 0
            ttl = redis_server.client()
            try:
                assert 0 < ttl.ttl(f"twibridge:summary:{rec(1).call_sid}") <= 7 * 24 * 3600
            finally:
                ttl.close()
        # a new registry (a restarted process) still lists them, newest first
        async with registry(redis_server.url) as fresh:
            recent = await fresh.recent(2)
            assert [s["call_sid"] for s in recent] == [rec(3).call_sid, rec(2).call_sid]
            assert recent[0]["outcome"] == "completed" and recent[0]["from_number"] == "+15550001"
            assert recent[0]["instance"] == fresh.instance and recent[0]["ended_at"] > 0
            assert len(await fresh.recent()) == 3


async def test_unregister_never_deletes_another_instances_record(redis_server: RedisServer) -> None:
    with trio.fail_after(10):
        async with registry(redis_server.url, ttl=1) as a, registry(redis_server.url) as b:
            assert await a.try_register(rec(1))
            await trio.sleep(1.3)  # a's record expired (a stalled); b takes the CallSid over
            assert await b.try_register(rec(1))
            await a.unregister(rec(1).call_sid, {"outcome": "caller-dropped"})
            assert await b.count() == 1
            await a.refresh(rec(1).call_sid)  # no longer a's: nothing happens


async def test_history_is_trimmed_by_ttl(redis_server: RedisServer) -> None:
    with trio.fail_after(10):
        async with registry(redis_server.url) as a:
            a.history_ttl_s = 1
            await a.unregister("CAold", {"outcome": "completed"})
            await trio.sleep(1.2)
            await a.unregister("CAnew", {"outcome": "completed"})
            assert [s["call_sid"] for s in await a.recent()] == ["CAnew"]
            client = redis_server.client()
            try:
                assert client.zrange("twibridge:history", 0, -1) == ["CAnew"]
            finally:
                client.close()


@pytest.mark.parametrize("outage", ["killed", "paused"])
async def test_redis_down_fails_fast_and_falls_back(redis_server: RedisServer, captured_logs: Any,
                                                    outage: str) -> None:
    with trio.fail_after(20):
        async with registry(redis_server.url) as a:
            metrics = a.metrics = FakeMetrics()
            assert await a.try_register(rec(1))
            redis_server.stop() if outage == "killed" else redis_server.pause()
            worst = 0.0
            for n in range(2, 6):  # several calls during the outage
                t0 = trio.current_time()
                assert await a.try_register(rec(n))  # served on local state
                assert not await a.try_register(rec(n))  # local duplicates still refused
                assert await a.count() == n  # this process's calls
                await a.refresh(rec(n).call_sid)
                worst = max(worst, trio.current_time() - t0)
            t0 = trio.current_time()
            await a.unregister(rec(5).call_sid, {"outcome": "completed"})
            assert [s["call_sid"] for s in await a.recent()] == [rec(5).call_sid]
            assert len(await a.live()) == 4
            worst = max(worst, trio.current_time() - t0)
            assert worst < TIMEOUT_S  # never blocks beyond the deadline (mostly: breaker open)
            assert a.degraded and metrics.registry_degraded.value == 1
            assert sum(metrics.registry_errors.count.values()) >= 10
            warnings = captured_logs.events("registry.redis_unavailable")
            assert len(warnings) == 1  # once per outage, not per call
            assert redis_server.url not in captured_logs.text

            # Redis back (empty after a kill): the next refresh re-creates the
            # live records and the queued summary is written.
            redis_server.start() if outage == "killed" else redis_server.resume()
            a._retry_at = 0  # skip the breaker's wait
            for n in range(1, 5):
                await a.refresh(rec(n).call_sid)
            assert not a.degraded and metrics.registry_degraded.value == 0
            assert captured_logs.events("registry.redis_recovered")
            async with registry(redis_server.url) as b:
                assert await b.count() == 4
                assert not await b.try_register(rec(3))
                assert [s["call_sid"] for s in await b.recent()] == [rec(5).call_sid]


async def test_strict_mode_raises_for_the_cli(redis_server: RedisServer) -> None:
    with trio.fail_after(10):
        async with registry(redis_server.url, fallback=False) as a:
            await a.ping()
            redis_server.stop()
            with pytest.raises(RegistryUnavailable):
                await a.ping()
            with pytest.raises(RegistryUnavailable):
                await a.recent()


async def test_password_never_logged(captured_logs: Any) -> None:
    # nothing listens on port 1: the connection is refused at once
    url = "redis://:s3cret-pass-word@127.0.0.1:1/0"
    with trio.fail_after(10):
        async with registry(url) as a:
            assert await a.count() == 0
            assert await a.try_register(rec(1))
    assert captured_logs.events("registry.redis_unavailable")
    assert "s3cret-pass-word" not in captured_logs.text


def test_bad_url_is_a_clean_error() -> None:
    cfg = make_config(state={"backend": "redis", "redis_url": "http://user:hunter2-secret@x/0"})
    with pytest.raises(ValueError) as err:
        RedisRegistry(cfg)
    assert "hunter2" not in str(err.value)


async def test_summaries_are_json(redis_server: RedisServer) -> None:
    async with registry(redis_server.url) as a:
        assert await a.try_register(rec(1))
        await a.unregister(rec(1).call_sid, {"outcome": "completed", "transcript": [{"role": "user",
                                                                                     "text": "hi"}]})
        client = redis_server.client()
        try:
            stored = json.loads(client.get(f"twibridge:summary:{rec(1).call_sid}"))
            # the caller's speech has a key (and a TTL: [state] transcript_ttl_s) of its own
            transcript = json.loads(client.get(f"twibridge:transcript:{rec(1).call_sid}"))
            ttl = client.ttl(f"twibridge:transcript:{rec(1).call_sid}")
        finally:
            client.close()
        assert stored["outcome"] == "completed" and "transcript" not in stored
        assert transcript == [{"role": "user", "text": "hi"}]
        assert 0 < ttl <= a.transcript_ttl_s < a.history_ttl_s
        assert (await a.recent(1))[0]["transcript"] == transcript  # shown with its summary
