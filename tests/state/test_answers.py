"""/voice once per CallSid, reservations and single-use stream tokens: the local book and both
registry backends (Redis: a real redis-server, shared by two instances)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest

from redis_support import RedisServer, needs_redis, redis_server  # noqa: F401 (fixture)
from support import make_config, sid
from twibridge.state import make_registry
from twibridge.state.answers import AnswerBook
from twibridge.state.memory import MemoryRegistry
from twibridge.state.registry import ANSWER_RETRY_WINDOW_S, MAX_ANSWERS, CallRecord, CallRegistry

CALL = sid("CA", 1)


def test_a_callsid_is_answered_once_but_retries_of_an_unanswered_one_work() -> None:
    book = AnswerBook(keep_s=3600)
    assert book.claim(CALL, 60, now=0)
    # Twilio retries (it got no answer): no stream started, within the window, a few times
    for n in range(1, MAX_ANSWERS):
        assert book.claim(CALL, 60, now=n)
    assert not book.claim(CALL, 60, now=MAX_ANSWERS)  # more than Twilio ever retries
    other = sid("CA", 2)
    assert book.claim(other, 60, now=0)
    assert not book.claim(other, 60, now=ANSWER_RETRY_WINDOW_S + 1)  # too late to be a retry
    third = sid("CA", 3)
    assert book.claim(third, 60, now=0) and book.started(third, "t3", 60, once=True, now=1)
    assert not book.claim(third, 60, now=2)  # its stream started: Twilio had the answer, this is a replay


def test_tokens_are_single_use_and_a_callsid_streams_once() -> None:
    book = AnswerBook(keep_s=3600)
    assert book.claim(CALL, 60, now=0) and book.claim(CALL, 60, now=1)  # two answers: two tokens
    assert book.started(CALL, "token-a", 60, once=True, now=2)
    assert not book.started(CALL, "token-a", 60, once=True, now=3)  # the same token again
    assert not book.started(CALL, "token-b", 60, once=True, now=3)  # the retry's token: the call streamed
    assert book.started(CALL, "", 60, once=False, now=4)  # without tokens: not ours to refuse
    assert book.started(sid("CA", 9), "token-a-elsewhere", 60, once=True, now=5)


def test_reservations_expire_with_the_token_and_end_at_start() -> None:
    book = AnswerBook(keep_s=3600)
    for n in range(3):
        assert book.claim(sid("CA", n), 60, now=0)
    assert book.reserved(now=1) == 3
    book.started(sid("CA", 0), "t", 60, once=True, now=2)
    assert book.reserved(now=2) == 2
    assert book.reserved(now=61) == 0  # never started: gone with its token's TTL


def test_the_book_is_bounded() -> None:
    book = AnswerBook(keep_s=100, max_kept=10)
    for n in range(50):
        book.claim(sid("CA", n), 60, now=n)
        book.started(sid("CA", n), f"t{n}", 60, once=True, now=n)
    assert len(book._answers) <= 10 and len(book._tokens) <= 10 and len(book._reserved) <= 10
    later = AnswerBook(keep_s=100)
    later.claim(CALL, 60, now=0)
    later.started(CALL, "t", 60, once=True, now=0)
    later.claim(sid("CA", 5), 60, now=200)  # pruning happens as it goes
    assert CALL not in later._answers and "t" not in later._tokens


@asynccontextmanager
async def registries(kind: str, url: str = "") -> AsyncIterator[tuple[CallRegistry, CallRegistry]]:
    """Two instances sharing one registry (Redis), or one memory registry twice."""
    if kind == "memory":
        reg = MemoryRegistry()
        yield reg, reg
        return
    cfg = make_config(state={"backend": "redis", "redis_url": url, "timeout_s": 0.5})
    a, b = make_registry(cfg), make_registry(cfg)
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


async def check_backend(a: CallRegistry, b: CallRegistry) -> None:
    assert await a.claim_answer(CALL, 60)
    assert await b.admitted() == 1  # a reservation, cluster-wide
    assert await b.claim_answer(CALL, 60)  # a retry, answered by the other instance
    assert await a.stream_started(CALL, "tok-1", 60, once=True)
    assert await a.admitted() == 0
    assert not await b.stream_started(CALL, "tok-1", 60, once=True)  # replayed token, other instance
    assert not await b.stream_started(CALL, "tok-2", 60, once=True)  # the retry's token
    assert not await b.claim_answer(CALL, 60)  # a replayed /voice after the stream started
    assert await a.try_register(CallRecord(CALL, sid("MZ", 1)))
    assert await b.admitted() == 1  # now a live call
    await a.unregister(CALL, {"outcome": "completed"})
    assert await b.admitted() == 0
    assert not await b.claim_answer(CALL, 60)  # and after the call ended


async def test_memory_backend() -> None:
    async with registries("memory") as (a, b):
        await check_backend(a, b)


@needs_redis
@pytest.mark.redis
async def test_redis_backend_is_cluster_wide(redis_server: RedisServer) -> None:
    async with registries("redis", redis_server.url) as (a, b):
        await check_backend(a, b)
        client = redis_server.client()
        try:
            ttl = client.ttl(f"twibridge:answer:{CALL}")
        finally:
            client.close()
        assert 0 < ttl <= make_config().state.history_ttl_s  # SET NX EX history_ttl_s


@needs_redis
@pytest.mark.redis
async def test_redis_down_still_refuses_replays_locally(redis_server: RedisServer, captured_logs: Any) -> None:
    async with registries("redis", redis_server.url) as (a, _):
        assert await a.claim_answer(CALL, 60)
        assert await a.stream_started(CALL, "tok", 60, once=True)
        redis_server.stop()
        assert not await a.stream_started(CALL, "tok", 60, once=True)
        assert not await a.claim_answer(CALL, 60)
        assert await a.claim_answer(sid("CA", 2), 60)
        assert await a.admitted() == 1
