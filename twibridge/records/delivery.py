"""Delivering ``call_ended`` reports: spooled first, signed, retried, never lost, never twice.

:meth:`Deliverer.submit` (the call's teardown) writes the report to the spool
(fsync'd) *before* the first attempt; :meth:`Deliverer.run` (one task per
server process) makes the attempts:

* each attempt is one :func:`twibridge.webhooks.client.post_signed` with the
  entry's fixed ``webhook-id`` (the same on every retry, across restarts: the
  receiver dedupes on it) and a fresh ``webhook-timestamp``;
* 2xx is delivered; anything else (an error status, a timeout, a refused
  connection) waits :func:`~twibridge.records.spool.next_delay` (8 attempts
  over about an hour, ``Retry-After`` honoured), then the entry is kept in
  ``failed/`` and counted;
* a stop of any kind (SIGTERM, crash, ``kill -9``) leaves pending entries in
  the spool; the next start tries each of them at once;
* two processes on one spool (``--workers``) never attempt one entry at the
  same time: the attempt holds an ``flock`` on its file and re-reads it under
  the lock; with Redis (:mod:`~twibridge.records.claims`) a claim per
  delivery covers instances that share a spool without working locks.

The URL and the secret never appear in a log line.
"""

from __future__ import annotations

import fcntl
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import httpx
import trio

from twibridge.config.records import WebhooksConfig
from twibridge.logs import get_logger
from twibridge.records import claims as cl
from twibridge.records.spool import BACKOFF_S, Entry, Spool, next_delay, read_entry
from twibridge.webhooks import client as wh
from twibridge.webhooks import signing

log = get_logger("twibridge.records.delivery")

#: Attempts in flight at once (per process).
MAX_CONCURRENT = 4
#: Wait when another process or instance holds an entry, or Redis is unreachable (uncounted).
HELD_RETRY_S = 5.0
#: Outcomes counted by ``twibridge_webhook_deliveries_total{outcome}``.
OUTCOMES = ("delivered", "retry", "failed")


class Deliverer:
    def __init__(self, cfg: WebhooksConfig, *, claims: cl.RedisClaims | None = None,
                 on_outcome: Callable[[str], None] | None = None, schedule: Sequence[float] = BACKOFF_S,
                 held_retry_s: float = HELD_RETRY_S) -> None:
        self.url = cfg.call_ended
        self.secret = cfg.secret.get_secret_value()
        self.timeout_s = cfg.timeout_s
        self.spool = Spool(cfg.spool_dir)
        self.claims = claims
        self.schedule = tuple(schedule)
        self.held_retry_s = held_retry_s
        self._on_outcome = on_outcome
        self._pending: dict[str, Entry] = {}
        self._inflight: set[str] = set()
        self._wake = trio.Event()
        self._redis_down = False
        self.counts = {o: 0 for o in OUTCOMES}
        self._changed = trio.Event()

    # -- what the server and the calls use --------------------------------

    @property
    def depth(self) -> int:
        """Reports waiting for delivery in this process (in flight included)."""
        return len(self._pending)

    def oldest_pending_s(self, now: float | None = None) -> float:
        now = time.time() if now is None else now
        return max((now - e.created_at for e in self._pending.values()), default=0.0)

    async def wait_for(self, pred: Callable[[], bool]) -> None:
        """Until ``pred()`` holds, re-checked after each outcome (tests, ``simulate-call``)."""
        while not pred():
            await self._changed.wait()

    async def submit(self, call_sid: str, report: Mapping[str, Any]) -> Entry:
        """Spool a report (durably, before any attempt) and wake the delivery task."""
        entry = Entry.new(signing.new_id(), self.url, wh.encode(report), call_sid, time.time())
        try:
            await trio.to_thread.run_sync(self._write_new, entry)
        except OSError as exc:
            # Still delivered from memory; only a restart before success would lose it.
            log.error("webhook.spool_write_failed", call_sid=call_sid, error=exc.strerror or type(exc).__name__,
                      spool_dir=str(self.spool.root))
        self._pending[entry.name] = entry
        self._wake.set()
        return entry

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver what the spool holds, then whatever is submitted, until cancelled."""
        try:
            found = await trio.to_thread.run_sync(self._load)
        except OSError as exc:
            log.error("webhook.spool_unusable", spool_dir=str(self.spool.root), error=exc.strerror or str(exc))
            found = []
        now = time.time()
        for entry in found:
            entry.next_at = now  # a start tries every pending report at once
            self._pending.setdefault(entry.name, entry)
        if found:
            log.info("webhook.spool_resumed", pending=len(found))
        task_status.started()
        async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:
            while True:
                now = time.time()
                waiting = [e for e in self._pending.values() if e.name not in self._inflight]
                for entry in sorted(waiting, key=lambda e: e.next_at):
                    if entry.next_at > now or len(self._inflight) >= MAX_CONCURRENT:
                        break
                    self._inflight.add(entry.name)
                    nursery.start_soon(self._attempt, client, entry)
                later = [e.next_at for e in self._pending.values() if e.name not in self._inflight]
                wait = min(later, default=math.inf) - now
                with trio.move_on_after(max(0.01, wait)):
                    await self._wake.wait()
                self._wake = trio.Event()

    async def aclose(self) -> None:
        if self.claims is not None:
            await self.claims.aclose()

    # -- one attempt -------------------------------------------------------

    async def _attempt(self, client: httpx.AsyncClient, entry: Entry) -> None:
        fd: int | None = None
        try:
            try:
                fd, fresh = await trio.to_thread.run_sync(self._lock, entry)
            except FileNotFoundError:  # another process delivered (or failed) it
                self._pending.pop(entry.name, None)
                self._signal()
                return
            except OSError:  # the spool is unusable: deliver from memory
                fresh = entry
            if fresh is None:
                entry.next_at = time.time() + self.held_retry_s
                return
            entry = self._pending[entry.name] = fresh
            if not await self._claimed(entry):
                return
            await self._send(client, entry)
        finally:
            if fd is not None:
                os.close(fd)  # releases the flock
            self._inflight.discard(entry.name)
            self._wake.set()

    async def _claimed(self, entry: Entry) -> bool:
        if self.claims is None:
            return True
        try:
            state = await self.claims.claim(entry.msg_id, self.timeout_s + self.held_retry_s)
        except cl.ClaimUnavailable:
            if not self._redis_down:
                log.warning("webhook.claim_unavailable", message="Redis did not answer: deliveries wait for it")
            self._redis_down = True
            entry.next_at = time.time() + self.held_retry_s
            return False
        self._redis_down = False
        if state == cl.DONE:
            log.info("webhook.delivered_elsewhere", call_sid=entry.call_sid, webhook_id=entry.msg_id)
            await self._finish(entry, "delivered")
            return False
        if state == cl.TAKEN:
            entry.next_at = time.time() + self.held_retry_s
            return False
        return True

    async def _send(self, client: httpx.AsyncClient, entry: Entry) -> None:
        entry.attempts += 1
        retry_after: float | None = None
        status: int | None = None
        try:
            reply = await wh.post_signed(client, entry.url, entry.body.encode("utf-8"), secret=self.secret,
                                         timeout_s=self.timeout_s, msg_id=entry.msg_id)
            ok, status, retry_after = reply.ok, reply.status, reply.retry_after_s
            error = "" if ok else f"HTTP {reply.status}"
        except wh.DeliveryError as exc:
            ok, error = False, exc.reason
        if ok:
            await self._finish(entry, "delivered")
            log.info("webhook.delivered", call_sid=entry.call_sid, webhook_id=entry.msg_id,
                     attempts=entry.attempts, status=status)
        else:
            entry.last_error = error
            delay = next_delay(entry.attempts, self.schedule, retry_after)
            if delay is None:
                log.warning("webhook.failed", call_sid=entry.call_sid, webhook_id=entry.msg_id,
                            attempts=entry.attempts, error=error, message="kept in the spool's failed/")
                await self._finish(entry, "failed")
            else:
                entry.next_at = time.time() + delay
                log.warning("webhook.retry", call_sid=entry.call_sid, webhook_id=entry.msg_id,
                            attempts=entry.attempts, error=error, retry_in_s=round(delay, 1))
                self._count("retry")
                await self._io(self.spool.put, entry)
        if self.claims is not None:
            try:
                await self.claims.release(entry.msg_id, ok)
            except cl.ClaimUnavailable:
                pass  # the claim expires by itself

    async def _finish(self, entry: Entry, state: str) -> None:
        await self._io(self.spool.move, entry, state)
        self._pending.pop(entry.name, None)
        self._count(state)

    async def _io(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            await trio.to_thread.run_sync(fn, *args)
        except OSError as exc:
            log.warning("webhook.spool_io_error", error=exc.strerror or type(exc).__name__)

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        self._signal()
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


    # -- in worker threads -------------------------------------------------

    def _write_new(self, entry: Entry) -> None:
        self.spool.ensure()
        self.spool.put(entry)

    def _load(self) -> list[Entry]:
        self.spool.ensure()
        self.spool.sweep(time.time())
        return self.spool.load("pending")

    def _lock(self, entry: Entry) -> tuple[int | None, Entry | None]:
        """Lock the entry's file; re-read it under the lock.  (None, None) when another holds it.

        Raises:
            FileNotFoundError: it left pending/ (delivered or failed elsewhere).
        """
        path = self.spool.path(entry)
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None, None
        try:
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError(str(path))  # replaced meanwhile: look again next time
            fresh = read_entry(path)
        except OSError:
            os.close(fd)
            raise
        if fresh is None:
            os.close(fd)
            raise FileNotFoundError(str(path))
        return fd, fresh


def make_deliverer(config: Any, on_outcome: Callable[[str], None] | None = None) -> Deliverer | None:
    """The server's deliverer (None without ``[webhooks] call_ended``); Redis claims with that backend."""
    if not config.webhooks.call_ended:
        return None
    claims = None
    if config.state.backend == "redis":
        claims = cl.RedisClaims(config.state.redis_url.get_secret_value(), config.state.timeout_s)
    return Deliverer(config.webhooks, claims=claims, on_outcome=on_outcome)
