"""Redis claims on deliveries: two instances never both deliver one report.

With ``[state] backend = "redis"``, before each attempt an instance claims
the report's ``webhook-id`` (``SET NX PX``, for the attempt's deadline and a
margin) and, once it is delivered, marks it done for a week.  Another
instance holding a copy of the same spool file (a shared volume, a copied
disk, ``--workers`` on a volume where ``flock`` does not hold) then finds it
claimed (it waits and looks again) or done (it files its copy as delivered).

The ``redis`` package's sync client in a worker thread, under a deadline, as
:mod:`twibridge.state.redis_registry` does (its asyncio client does not run
under Trio).  Redis unreachable: :class:`ClaimUnavailable` — the deliverer
postpones the attempt (uncounted) rather than risk a second delivery.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import redis
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from twibridge.state.redis_registry import PREFIX, instance_id

T = TypeVar("T")
DONE_TTL_S = 7 * 24 * 3600

# KEYS: claim, done; ARGV: owner, ttl ms.  1 claimed, 0 claimed by another, 2 already delivered.
_CLAIM = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""
# KEYS: claim, done; ARGV: owner, delivered (1/0), done ttl s.
_RELEASE = """
if ARGV[2] == '1' then redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

CLAIMED, TAKEN, DONE = 1, 0, 2


class ClaimUnavailable(Exception):
    """Redis did not answer in time."""


class RedisClaims:
    def __init__(self, url: str, timeout_s: float = 1.0, owner: str | None = None) -> None:
        self.owner = owner or instance_id()
        self.timeout_s = timeout_s
        sock = max(0.05, timeout_s * 0.7)
        try:
            self._client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=sock,
                                                socket_connect_timeout=sock, retry=Retry(NoBackoff(), 0),
                                                max_connections=4, health_check_interval=0)
        except ValueError:
            raise ValueError("state.redis_url: not a valid redis:// / rediss:// / unix:// URL") from None
        self._claim = self._client.register_script(_CLAIM)
        self._release = self._client.register_script(_RELEASE)
        self._limiter = trio.CapacityLimiter(4)

    @staticmethod
    def keys(msg_id: str) -> list[str]:
        return [f"{PREFIX}delivery:{msg_id}", f"{PREFIX}delivered:{msg_id}"]

    async def claim(self, msg_id: str, ttl_s: float) -> int:
        """:data:`CLAIMED`, :data:`TAKEN` (another instance is on it) or :data:`DONE`."""
        return int(await self._run(lambda: self._claim(keys=self.keys(msg_id),
                                                       args=[self.owner, int(ttl_s * 1000)])))

    async def release(self, msg_id: str, delivered: bool) -> None:
        await self._run(lambda: self._release(keys=self.keys(msg_id),
                                              args=[self.owner, "1" if delivered else "0", DONE_TTL_S]))

    async def aclose(self) -> None:
        with trio.move_on_after(self.timeout_s):
            await trio.to_thread.run_sync(self._client.close, abandon_on_cancel=True, limiter=self._limiter)

    async def _run(self, fn: Callable[[], Any]) -> Any:
        try:
            with trio.fail_after(self.timeout_s):
                return await trio.to_thread.run_sync(fn, abandon_on_cancel=True, limiter=self._limiter)
        except (trio.TooSlowError, redis.RedisError, OSError) as exc:
            raise ClaimUnavailable(type(exc).__name__) from None
