"""The call registry in Redis: shared by every process and VM of one deployment.

Why this shape:

* The ``redis`` package's asyncio client does not run under Trio, so each
  operation is one blocking call of its **sync** client run in a worker thread
  (``trio.to_thread.run_sync(..., abandon_on_cancel=True)``) under a deadline
  shorter than ``[state] timeout_s`` (80 %): the caller's own bound never has to fire,
  and a hung Redis costs one abandoned thread (the socket timeout ends it),
  never a blocked call.  Operations happen per call, never per frame.
* Every multi-key operation is one Lua script, so it is atomic and one round
  trip, and it reads the clock from Redis (``TIME``), so VMs with skewed
  clocks agree on expiry.

Keys (``twibridge:`` prefix; several deployments on one Redis use separate
databases, ``redis://host:6379/1``)::

    twibridge:call:<CallSid>   live record (JSON), SET NX EX record_ttl_s
    twibridge:live             ZSET CallSid -> expiry (Redis time): count in O(log n)
    twibridge:summary:<Sid>    call summary (JSON), EX history_ttl_s
    twibridge:history          ZSET CallSid -> end time, trimmed by age and length

A crashed instance stops refreshing: its record key expires by itself and
its ``live`` entry is pruned on the next read (scores are expiry times), so
the cluster-wide count drops within ``record_ttl_s``.

Redis down (or slow): the operation fails within the deadline, a warning is
logged once per outage (not per call) and ``rt.metrics`` counts it; a short
circuit breaker then skips Redis for a while so later calls do not each pay
the timeout.  Meanwhile the registry answers from local state: registration
checks local duplicates only, ``count`` is this process's calls (so the
webhook's ``max_calls`` is per process), summaries are queued (bounded) and
written on recovery, and ``refresh`` re-creates records Redis lost (a restart
without persistence), so the cluster view heals by itself.

The Redis URL may hold a password: it is never logged, and error text is
scrubbed of it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections import deque
from typing import Any, Callable, TypeVar
from urllib.parse import unquote, urlsplit

import redis
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from twibridge.logs import get_logger
from twibridge.state.registry import CallRecord

log = get_logger("twibridge.registry")

T = TypeVar("T")

PREFIX = "twibridge:"
LIVE = PREFIX + "live"
HISTORY = PREFIX + "history"
#: Summaries kept in the history index at most (older ones also expire by TTL).
MAX_HISTORY = 10_000
#: Threads (and pooled connections) for Redis: registry calls are per call, short.
MAX_THREADS = 8
#: Summaries held while Redis is down, written on recovery (oldest dropped first).
MAX_UNSENT = 500
#: Written per recovery step, so one operation never carries a long backlog.
FLUSH_BATCH = 50
#: Local history kept for ``recent()`` while Redis is unreachable.
LOCAL_HISTORY = 200
#: Circuit breaker: after a failure, skip Redis this long (doubling up to the max).
BREAKER_MIN_S, BREAKER_MAX_S = 1.0, 10.0

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000 "

# KEYS: call key, live; ARGV: sid, value, ttl.  1 = claimed, 0 = live elsewhere.
_REGISTER = _NOW + """
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3]) then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
  return 1
end
return 0
"""

# Same keys/args.  Re-creates a record Redis lost; 0 = another instance owns it now.
_REFRESH = _NOW + """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[2] then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
elseif not cur then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
else
  return 0
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""

# KEYS: call key, live, summary key, history; ARGV: sid, value ('' if none), summary,
# history ttl, max history.  The live record is deleted only if it is still ours.
_UNREGISTER = _NOW + """
if ARGV[2] ~= '' and redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local ttl = tonumber(ARGV[4])
redis.call('SET', KEYS[3], ARGV[3], 'EX', ttl)
redis.call('ZADD', KEYS[4], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - ttl)
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -(tonumber(ARGV[5]) + 1))
return 1
"""

# KEYS: live.  Prune expired entries (crashed instances), then count.
_COUNT = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: live; ARGV: call key prefix.  Prune, then the live records' JSON.
_LIVE = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
local sids = redis.call('ZRANGE', KEYS[1], 0, -1)
if #sids == 0 then return {} end
local keys = {}
for i, sid in ipairs(sids) do keys[i] = ARGV[1] .. sid end
return redis.call('MGET', unpack(keys))
"""

# KEYS: history; ARGV: summary key prefix, limit.  Newest first.
_RECENT = """
local sids = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
if #sids == 0 then return {} end
local keys = {}
for i, sid in ipairs(sids) do keys[i] = ARGV[1] .. sid end
return redis.call('MGET', unpack(keys))
"""


def call_key(call_sid: str) -> str:
    return f"{PREFIX}call:{call_sid}"


def summary_key(call_sid: str) -> str:
    return f"{PREFIX}summary:{call_sid}"


def instance_id() -> str:
    """Which process holds a call (shown by ``twibridge calls``)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class RegistryUnavailable(Exception):
    """Redis could not answer in time (only raised with ``fallback=False``)."""


class RedisRegistry:
    """:class:`twibridge.state.registry.CallRegistry` on Redis; see the module docstring.

    Args:
        config: the whole :class:`twibridge.config.Config` (``[state]`` is used).
        fallback: answer from local state when Redis is unreachable (the
            server's choice); False raises :class:`RegistryUnavailable`
            instead (the ``twibridge calls`` CLI: an empty answer would lie).
    """

    def __init__(self, config: Any, *, fallback: bool = True) -> None:
        st = config.state
        self.record_ttl_s = int(st.record_ttl_s)
        self.history_ttl_s = int(st.history_ttl_s)
        self.timeout_s = float(st.timeout_s)
        self.fallback = fallback
        #: Set by the server (``rt.metrics``) so outages show in /metrics.
        self.metrics: Any = None
        self.instance = instance_id()
        url = st.redis_url.get_secret_value()
        self._password = _url_password(url)
        # Socket timeouts below our deadline, no client-side retries: a failing
        # op must fail once, fast, and leave fallback to us.
        sock_timeout = max(0.05, self.timeout_s * 0.7)
        try:
            self._client = redis.Redis.from_url(
                url, decode_responses=True, socket_timeout=sock_timeout, socket_connect_timeout=sock_timeout,
                retry=Retry(NoBackoff(), 0), max_connections=MAX_THREADS, health_check_interval=0)
        except ValueError:
            raise ValueError("state.redis_url: not a valid redis:// / rediss:// / unix:// URL") from None
        self._scripts = {name: self._client.register_script(src) for name, src in (
            ("register", _REGISTER), ("refresh", _REFRESH), ("unregister", _UNREGISTER),
            ("count", _COUNT), ("live", _LIVE), ("recent", _RECENT))}
        self._deadline = self.timeout_s * 0.8
        self._limiter = trio.CapacityLimiter(MAX_THREADS)
        #: Records this process holds, with the exact JSON stored (ownership check).
        self._mine: dict[str, tuple[CallRecord, str]] = {}
        self._unsent: deque[tuple[str, str, str]] = deque(maxlen=MAX_UNSENT)
        self._local_history: deque[dict[str, Any]] = deque(maxlen=LOCAL_HISTORY)
        self._down_since: float | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._backoff = BREAKER_MIN_S

    # -------------------------------------------------------------- protocol

    async def try_register(self, record: CallRecord) -> bool:
        if not record.instance:
            record = dataclasses.replace(record, instance=self.instance)
        if record.call_sid in self._mine:
            return False
        value = json.dumps(record.to_dict(), separators=(",", ":"))
        sid = record.call_sid
        try:
            claimed = await self._run("register", lambda: self._script("register", sid, value))
        except RegistryUnavailable:
            if not self.fallback:
                raise
            claimed = 1  # local duplicates were checked above; refresh re-creates it later
        if claimed:
            self._mine[sid] = (record, value)
        return bool(claimed)

    async def refresh(self, call_sid: str) -> None:
        held = self._mine.get(call_sid)
        if held is None:
            return
        value = held[1]

        def op() -> int:
            ok = int(self._script("refresh", call_sid, value))
            self._flush_unsent()
            return ok

        try:
            if not await self._run("refresh", op):
                log.warning("registry.record_taken", call_sid=call_sid,
                            message="another instance holds this CallSid now (ours expired)")
        except RegistryUnavailable:
            if not self.fallback:
                raise

    async def unregister(self, call_sid: str, summary: dict[str, Any] | None = None) -> None:
        held = self._mine.pop(call_sid, None)
        value = held[1] if held else ""
        if summary is None:
            if not value:
                return
            summary = {"call_sid": call_sid}
        full = self._complete(call_sid, summary, held[0] if held else None)
        self._local_history.appendleft(full)
        blob = json.dumps(full, separators=(",", ":"), default=str)

        def op() -> None:
            self._write_summary(call_sid, value, blob)
            self._flush_unsent()

        try:
            await self._run("unregister", op)
        except RegistryUnavailable:
            self._unsent.append((call_sid, value, blob))
            if not self.fallback:
                raise

    async def count(self) -> int:
        try:
            return int(await self._run("count", lambda: self._scripts["count"](keys=[LIVE])))
        except RegistryUnavailable:
            if not self.fallback:
                raise
            return len(self._mine)

    async def live(self) -> list[CallRecord]:
        try:
            blobs = await self._run("live", lambda: self._scripts["live"](keys=[LIVE], args=[call_key("")]))
        except RegistryUnavailable:
            if not self.fallback:
                raise
            return [rec for rec, _ in self._mine.values()]
        records = []
        for blob in blobs:
            data = _loads(blob)
            if data is not None:
                known = {f.name for f in dataclasses.fields(CallRecord)}
                records.append(CallRecord(**{k: v for k, v in data.items() if k in known}))
        return sorted(records, key=lambda r: r.started_at)

    async def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        limit = max(1, min(int(limit), MAX_HISTORY))
        try:
            blobs = await self._run("recent", lambda: self._scripts["recent"](
                keys=[HISTORY], args=[summary_key(""), limit]))
        except RegistryUnavailable:
            if not self.fallback:
                raise
            return list(self._local_history)[:limit]
        return [d for d in map(_loads, blobs) if d is not None]

    async def ping(self) -> None:
        """Raise :class:`RegistryUnavailable` unless Redis answers (for the CLI)."""
        await self._run("ping", self._client.ping)

    async def aclose(self) -> None:
        with trio.move_on_after(self.timeout_s):
            await trio.to_thread.run_sync(self._client.close, abandon_on_cancel=True, limiter=self._limiter)

    # -------------------------------------------------------------- helpers

    @property
    def degraded(self) -> bool:
        """True while Redis is failing (calls run on local state)."""
        return self._down_since is not None

    def _script(self, name: str, sid: str, value: str) -> Any:
        return self._scripts[name](keys=[call_key(sid), LIVE], args=[sid, value, self.record_ttl_s])

    def _write_summary(self, sid: str, value: str, blob: str) -> None:
        self._scripts["unregister"](
            keys=[call_key(sid), LIVE, summary_key(sid), HISTORY],
            args=[sid, value, blob, self.history_ttl_s, MAX_HISTORY])

    def _flush_unsent(self) -> None:
        """(In the worker thread, after a success) write summaries queued in an outage."""
        for _ in range(min(FLUSH_BATCH, len(self._unsent))):
            try:
                item = self._unsent.popleft()
            except IndexError:  # another thread emptied it
                return
            try:
                self._write_summary(*item)
            except redis.RedisError:
                self._unsent.appendleft(item)
                return

    def _complete(self, sid: str, summary: dict[str, Any], record: CallRecord | None) -> dict[str, Any]:
        """The summary as stored: what the call reported plus who, where, when."""
        full: dict[str, Any] = {"call_sid": sid, "ended_at": round(time.time(), 3), "instance": self.instance}
        if record is not None:
            full.update(stream_sid=record.stream_sid, from_number=record.from_number,
                        to_number=record.to_number, started_at=record.started_at)
        full.update(summary)
        return full

    async def _run(self, op: str, fn: Callable[[], T]) -> T:
        """Run one blocking Redis operation in a thread, bounded; track outages."""
        if self._down_since is not None and time.monotonic() < self._retry_at:
            self._failed(op, None)
            raise RegistryUnavailable(op)
        try:
            with trio.fail_after(self._deadline):
                result = await trio.to_thread.run_sync(fn, abandon_on_cancel=True, limiter=self._limiter)
        except (trio.TooSlowError, redis.RedisError, OSError) as exc:
            self._failed(op, exc)
            raise RegistryUnavailable(op) from None
        if self._down_since is not None:
            log.info("registry.redis_recovered", outage_s=round(time.monotonic() - self._down_since, 1),
                     failed_ops=self._failures, unsent_summaries=len(self._unsent))
            self._down_since, self._failures, self._backoff = None, 0, BREAKER_MIN_S
            self._set_degraded(0)
        return result

    def _failed(self, op: str, exc: BaseException | None) -> None:
        self._failures += 1
        metric = getattr(self.metrics, "registry_errors", None)
        if metric is not None:
            metric.labels(op=op).inc()
        if exc is None:
            return  # breaker open: already logged for this outage
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            detail = "no answer within the deadline" if isinstance(exc, trio.TooSlowError) else str(exc)
            if self._password:
                detail = detail.replace(self._password, "[redacted]")
            log.warning("registry.redis_unavailable", op=op, error=type(exc).__name__, detail=detail[:200],
                        fallback="local state" if self.fallback else "none",
                        message="calls continue on this process's local state until Redis answers")
            self._set_degraded(1)
        else:
            self._backoff = min(self._backoff * 2, BREAKER_MAX_S)
        self._retry_at = now + self._backoff

    def _set_degraded(self, value: int) -> None:
        gauge = getattr(self.metrics, "registry_degraded", None)
        if gauge is not None:
            gauge.set(value)


def _loads(blob: Any) -> dict[str, Any] | None:
    if not blob:
        return None
    try:
        data = json.loads(blob)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _url_password(url: str) -> str:
    try:
        pw = urlsplit(url).password
    except ValueError:
        return ""
    return unquote(pw) if pw else ""
