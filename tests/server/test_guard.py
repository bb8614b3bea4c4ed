"""twibridge.server.guard on a real server: the per-address cap, trusted proxies, the log budget.

Issue #23 items 8 (connections per address) and 10 (log flooding by bad
signatures; the client address behind a proxy).
"""

from __future__ import annotations

import httpx
import pytest
import trio
import trio_websocket

from rawhttp import open_request, read_response
from rawws import twilio_signature
from support import Leg, bridge, make_config, media_socket, post_signed, sid, wait_calls, ws_url
from twibridge.agents.wsclient import connect_ws
from twibridge.server.guard import LogBudget, forwarded_client, parse_networks, truncate

VOICE = {"CallSid": sid("CA", 1), "AccountSid": "AC" + "0" * 32, "From": "+15550001", "To": "+15550002"}


def test_forwarded_client_trusts_only_configured_proxies() -> None:
    trusted = parse_networks(["127.0.0.1", "10.0.0.0/8"])
    xff = [(b"x-forwarded-for", b"198.51.100.7, 10.1.2.3")]
    assert forwarded_client("127.0.0.1", xff, trusted) == "198.51.100.7"  # through two trusted proxies
    assert forwarded_client("192.0.2.9", xff, trusted) == "192.0.2.9"  # not a proxy: header ignored
    assert forwarded_client("127.0.0.1", xff, ()) == "127.0.0.1"  # none configured: header ignored
    assert forwarded_client("127.0.0.1", [(b"x-forwarded-for", b"not-an-ip")], trusted) == "127.0.0.1"
    assert forwarded_client("127.0.0.1", [(b"X-Forwarded-For", b"[2001:db8::1]:443")], trusted) == "2001:db8::1"


def test_log_budget_logs_the_first_then_at_doubling_counts() -> None:
    budget = LogBudget(first=3)
    full, summaries = 0, []
    for n in range(1, 101):
        if budget.take():
            full += 1
        elif budget.summary_due():
            summaries.append(n)
    assert full == 3 and summaries == [6, 12, 24, 48, 96]
    assert truncate("x" * 500, 200).startswith("x" * 200) and len(truncate("x" * 500, 200)) < 230


async def test_a_flood_of_bad_signatures_with_10kb_urls_logs_little_and_counts_all(captured_logs) -> None:
    long_query = "q=" + "A" * 10_000
    async with bridge() as (url, rt):
        async with httpx.AsyncClient() as client:
            for _ in range(170):
                resp = await client.post(f"{url}/voice?{long_query}", data=VOICE,
                                         headers={"X-Twilio-Signature": "bm90LWEtc2lnbmF0dXJl"})
                assert resp.status_code == 403
        counted = rt.metrics.calls.labels(outcome="refused_unsigned")._value.get()  # type: ignore[union-attr]
    full = captured_logs.events("http.bad_signature")
    summaries = captured_logs.events("server.bad_signatures_suppressed")
    assert counted == 170
    assert len(full) == LogBudget().first and all(len(w["signed_url"]) < 250 for w in full)
    assert [s["refused_total"] for s in summaries] == [40, 80, 160]
    assert len(captured_logs.text) < 30_000  # 170 × 10 KB URLs were 1.7 MB of log before


async def test_the_client_address_comes_from_x_forwarded_for_only_from_a_trusted_proxy(captured_logs) -> None:
    forged = {"X-Forwarded-For": "203.0.113.50", "X-Twilio-Signature": "bm90LWEtc2lnbmF0dXJl"}
    async with bridge(make_config()) as (url, _):  # no trusted_proxies: the header is the client's word
        await post_signed(url, "/voice", VOICE, signature=forged["X-Twilio-Signature"])
        async with httpx.AsyncClient() as client:
            await client.post(url + "/voice", data=VOICE, headers=forged)
    async with bridge(make_config(server={"trusted_proxies": ["127.0.0.0/8"]})) as (url, _):
        async with httpx.AsyncClient() as client:
            await client.post(url + "/voice", data=VOICE, headers=forged)
            await client.post(url + "/voice", data=VOICE,
                              headers={**forged, "X-Forwarded-For": "198.51.100.1, 203.0.113.50"})
    remotes = [w["remote"] for w in captured_logs.events("http.bad_signature")]
    # the right-most untrusted hop is the client; a hop it prepended itself is ignored
    assert remotes == ["127.0.0.1", "127.0.0.1", "203.0.113.50", "203.0.113.50"]


async def test_per_address_cap_refuses_a_third_slow_request_and_not_other_addresses() -> None:
    cfg = make_config(server={"max_connections_per_address": 2, "trusted_proxies": ["127.0.0.1"]})
    attacker = {"X-Forwarded-For": "203.0.113.9", "X-Twilio-Signature": "x"}
    async with bridge(cfg) as (url, rt):
        with trio.fail_after(10):
            slow = [await open_request(url, "/voice", attacker, content_length=1000) for _ in range(2)]
            for stream in slow:
                await stream.send_all(b"a=1")  # bodies started, never finished
            third = await open_request(url, "/voice", attacker, content_length=1000)
            refused = await read_response(third)  # at once, the body never read
            async with httpx.AsyncClient() as client:
                other = await client.get(url + "/healthz", headers={"X-Forwarded-For": "198.51.100.2"})
            with pytest.raises(trio_websocket.ConnectionRejected) as upgrade:  # a handshake counts too
                async with connect_ws(ws_url(url), {"X-Forwarded-For": "203.0.113.9",
                                                    "X-Twilio-Signature": twilio_signature(url)}):
                    pass  # pragma: no cover
        for stream in (*slow, third):
            await stream.aclose()
        overload = rt.metrics.calls.labels(outcome="refused_overload")._value.get()  # type: ignore[union-attr]
    assert (refused.status, refused.headers.get("connection"), other.status_code) == (503, "close", 200)
    assert upgrade.value.status_code == 503 and overload == 2


async def test_an_accepted_media_stream_does_not_count_against_the_per_address_cap() -> None:
    """Twilio opens many streams from few addresses: only the unverified handshake counts."""
    cfg = make_config(server={"max_connections_per_address": 1})
    async with bridge(cfg) as (url, rt):
        async with media_socket(url) as ws:
            leg = Leg(ws)
            await leg.start()
            await wait_calls(rt, 1, timeout=5)
            async with httpx.AsyncClient() as client:
                health = await client.get(url + "/healthz")
            async with media_socket(url) as ws2:
                leg2 = Leg(ws2, 2)
                await leg2.start()
                await wait_calls(rt, 2, timeout=5)
    assert health.status_code == 200


async def test_thirty_slow_bodies_from_one_address_do_not_fail_a_genuine_webhook() -> None:
    """The 300-slow-bodies attack, scaled down: the attacker's address holds at most its share."""
    from support import TOKEN
    from twibridge.twilio.signature import SignatureChecker

    cfg = make_config(server={"max_connections_per_address": 5, "max_connections": 40,
                              "trusted_proxies": ["127.0.0.1"]})
    attacker = {"X-Forwarded-For": "203.0.113.9", "X-Twilio-Signature": "x"}
    async with bridge(cfg) as (url, _):
        with trio.fail_after(15):
            slow = [await open_request(url, "/voice", attacker, content_length=1000) for _ in range(30)]
            for stream in slow:
                await stream.send_all(b"a=1")
            refused = 0
            for stream in slow[5:]:
                refused += (await read_response(stream)).status == 503
            signature = SignatureChecker(TOKEN).sign(url + "/voice", VOICE)
            async with httpx.AsyncClient() as client:
                genuine = await client.post(url + "/voice", data=VOICE, headers={
                    "X-Twilio-Signature": signature, "X-Forwarded-For": "198.51.100.2"})
        for stream in slow:
            await stream.aclose()
    assert refused == 25 and genuine.status_code == 200 and "<Stream" in genuine.text
