"""twibridge.records.delivery: a real local receiver; signature, retries, 5xx then success, spool, claims."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import trio

from fakes.receiver import receiver
from redis_support import RedisServer, redis_server  # noqa: F401  (fixture)
from twibridge.config.records import WebhooksConfig
from twibridge.records.claims import RedisClaims
from twibridge.records.delivery import Deliverer
from twibridge.records.spool import Spool
from twibridge.webhooks import signing

SECRET = signing.new_secret()
FAST = (0.05, 0.05, 0.05)  # 4 attempts, quickly


def cfg(url: str, spool: Path) -> WebhooksConfig:
    return WebhooksConfig(call_ended=url, secret=SECRET, timeout_s=2, spool_dir=str(spool))


async def test_delivered_signed_and_filed(tmp_path: Path) -> None:
    async with receiver(SECRET) as rx, trio.open_nursery() as nursery:
        d = Deliverer(cfg(rx.url, tmp_path), schedule=FAST)
        await nursery.start(d.run)
        entry = await d.submit("CA1", {"type": "call_ended", "call_sid": "CA1", "text": "héllo"})
        (got,) = await rx.wait(1, delivered=True)
        assert got.signature_ok and got.msg_id == entry.msg_id
        assert got.json() == {"type": "call_ended", "call_sid": "CA1", "text": "héllo"}
        with trio.fail_after(5):
            await d.wait_for(lambda: d.depth == 0)
        assert d.counts == {"delivered": 1, "retry": 0, "failed": 0}
        spool = Spool(tmp_path)
        assert [s for s, _ in spool.find("CA1")] == ["delivered"]
        f = spool.path(entry, "delivered")
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        nursery.cancel_scope.cancel()


async def test_5xx_then_success_same_id(tmp_path: Path) -> None:
    async with receiver(SECRET, statuses=[500, 503]) as rx, trio.open_nursery() as nursery:
        d = Deliverer(cfg(rx.url, tmp_path), schedule=FAST)
        await nursery.start(d.run)
        entry = await d.submit("CA2", {"call_sid": "CA2"})
        reqs = await rx.wait(1, delivered=True)
        assert [r.status for r in rx.requests] == [500, 503, 200]
        assert {r.msg_id for r in reqs} == {entry.msg_id} == {r.msg_id for r in rx.requests}
        assert all(r.signature_ok for r in rx.requests)
        assert d.counts["retry"] == 2
        nursery.cancel_scope.cancel()


async def test_gives_up_after_the_schedule_and_keeps_it(tmp_path: Path) -> None:
    async with receiver(SECRET, statuses=[500] * 10) as rx, trio.open_nursery() as nursery:
        d = Deliverer(cfg(rx.url, tmp_path), schedule=FAST)
        await nursery.start(d.run)
        await d.submit("CA3", {"call_sid": "CA3"})
        await rx.wait(4)
        with trio.fail_after(5):
            await d.wait_for(lambda: d.depth == 0)
        assert len(rx.requests) == 4  # 1 + len(schedule), then no more
        assert d.counts == {"delivered": 0, "retry": 3, "failed": 1}
        (state, entry), = Spool(tmp_path).find("CA3")
        assert state == "failed" and entry.attempts == 4 and entry.last_error == "HTTP 500"
        nursery.cancel_scope.cancel()


async def test_connection_refused_is_retried_from_the_spool_on_restart(tmp_path: Path) -> None:
    # First life: the receiver is down; the report waits in the spool.
    async with trio.open_nursery() as nursery:
        d = Deliverer(cfg("http://127.0.0.1:9/hook", tmp_path), schedule=(30,))
        await nursery.start(d.run)
        entry = await d.submit("CA4", {"call_sid": "CA4"})
        with trio.fail_after(5):
            await d.wait_for(lambda: d.counts["retry"] >= 1)
        nursery.cancel_scope.cancel()
    (state, kept), = Spool(tmp_path).find("CA4")
    assert state == "pending" and kept.attempts == 1 and kept.msg_id == entry.msg_id
    # Second life: the receiver is up (a new URL: rewrite it as an operator moving the endpoint would).
    async with receiver(SECRET) as rx, trio.open_nursery() as nursery:
        path = Spool(tmp_path).path(kept)
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "url": rx.url}))
        d = Deliverer(cfg(rx.url, tmp_path), schedule=FAST)
        await nursery.start(d.run)
        (got,) = await rx.wait(1, delivered=True)
        assert got.msg_id == entry.msg_id
        nursery.cancel_scope.cancel()


async def test_two_processes_on_one_spool_deliver_once(tmp_path: Path) -> None:
    """Two deliverers loading the same pending file (``--workers``): the flock lets one send it."""
    async with receiver(SECRET) as rx:
        first = Deliverer(cfg(rx.url, tmp_path))
        entry = await first.submit("CA5", {"call_sid": "CA5"})  # spooled; no task runs yet
        a, b = Deliverer(cfg(rx.url, tmp_path)), Deliverer(cfg(rx.url, tmp_path))
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            await rx.wait(1, delivered=True)
            with trio.fail_after(10):
                await a.wait_for(lambda: a.depth == 0)
                await b.wait_for(lambda: b.depth == 0)
            nursery.cancel_scope.cancel()
        assert [r.msg_id for r in rx.requests] == [entry.msg_id]


async def test_redis_claim_guards_two_spools_with_one_report(tmp_path: Path, redis_server: RedisServer) -> None:
    """The same spool file on two hosts (a copied or shared volume, no common flock): Redis decides."""
    one, two = tmp_path / "one", tmp_path / "two"
    async with receiver(SECRET, hang=True) as rx:
        seed = Deliverer(cfg(rx.url, one))
        entry = await seed.submit("CA6", {"call_sid": "CA6"})
        shutil.copytree(one, two)
        claims_a, claims_b = RedisClaims(redis_server.url, owner="a"), RedisClaims(redis_server.url, owner="b")
        a = Deliverer(cfg(rx.url, one), claims=claims_a, held_retry_s=0.1, schedule=FAST)
        b = Deliverer(cfg(rx.url, two), claims=claims_b, held_retry_s=0.1, schedule=FAST)
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            await rx.wait(1)  # one of them is in its attempt, held open by the receiver
            await trio.sleep(0.5)  # the other retries its claim every 0.1 s meanwhile
            assert len(rx.requests) == 1
            rx.hang = False
            rx.release.set()
            with trio.fail_after(10):
                await a.wait_for(lambda: a.depth == 0)
                await b.wait_for(lambda: b.depth == 0)
            nursery.cancel_scope.cancel()
        await claims_a.aclose()
        await claims_b.aclose()
    # The held request never got an answer (hang): the winner retried and was answered 200;
    # the loser found the delivery done in Redis and filed its copy without sending.
    assert {r.msg_id for r in rx.requests} == {entry.msg_id}
    assert len(rx.delivered) == 1
    states = sorted(s for d in (one, two) for s, _ in Spool(d).find("CA6"))
    assert states == ["delivered", "delivered"]
    assert a.counts["delivered"] + b.counts["delivered"] == 2  # one sent, one filed as delivered elsewhere


def test_spool_files_are_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    spool.ensure()
    assert stat.S_IMODE(os.stat(spool.dir("pending")).st_mode) == 0o700
