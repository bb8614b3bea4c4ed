"""Webhook bodies from the internet (issue #23, items 1 and 8), attacked on a real server.

Each test sends the hostile request by hand (tests/rawhttp.py) and asserts on
*ordering*: the refusal arrives while the attacker still has most of its body
to send, and other requests are answered meanwhile.  Before the fix the server
read (up to 16 MiB, for up to 60 s) and parsed the whole form on the loop that
carries every call's audio, then looked at the signature.
"""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
import trio

from rawhttp import chunk, closed_by_peer, open_request, read_response
from support import TOKEN, bridge, make_config, post_signed, sid
from twibridge.twilio.signature import SignatureChecker

FOUR_MB = 4 * 1024 * 1024
VOICE = {"CallSid": sid("CA", 1), "AccountSid": "AC" + "0" * 32, "From": "+15550001", "To": "+15550002"}


async def test_unsigned_4mb_bodies_get_403_before_the_body_and_healthz_is_not_held(captured_logs) -> None:
    async with bridge() as (url, rt):
        streams = [await open_request(url, "/voice", content_length=FOUR_MB) for _ in range(6)]
        with trio.fail_after(10):
            for stream in streams:
                await stream.send_all(b"a" * 65536)  # 1/64 of the body; the rest is never sent
            answers = [await read_response(s) for s in streams]
            async with httpx.AsyncClient() as client:
                health = await client.get(url + "/healthz")  # answered while six bodies are "in flight"
            assert all([await closed_by_peer(s) for s in streams])  # and their connections end
        for stream in streams:
            await stream.aclose()
        genuine = await post_signed(url, "/voice", VOICE)
    assert [a.status for a in answers] == [403] * 6 and health.status_code == 200
    assert genuine.status_code == 200
    logged = captured_logs.events("http.bad_signature")
    assert len(logged) == 6 and {w["signed_url"] for w in logged} == {"(no X-Twilio-Signature header)"}
    assert rt.metrics is not None and rt.metrics.calls.labels(outcome="refused_unsigned")._value.get() == 6


async def test_a_signed_looking_oversized_body_gets_413_before_it_is_sent() -> None:
    async with bridge() as (url, _):
        with trio.fail_after(10):
            declared = await open_request(url, "/voice", {"X-Twilio-Signature": "bm90LWEtc2lnbmF0dXJl"},
                                          content_length=FOUR_MB)
            too_big = await read_response(declared)  # not a byte of the body sent
            chunked = await open_request(url, "/voice", {"X-Twilio-Signature": "bm90LWEtc2lnbmF0dXJl"},
                                         chunked=True)
            await chunked.send_all(chunk(b"a" * 70_000))  # past 64 KB, no final chunk ever
            too_big_chunked = await read_response(chunked)
        await declared.aclose()
        await chunked.aclose()
        genuine = await post_signed(url, "/voice", VOICE)
    assert (too_big.status, too_big_chunked.status, genuine.status_code) == (413, 413, 200)


async def test_form_field_count_is_capped_even_when_signed() -> None:
    cfg = make_config(server={"max_form_fields": 50})
    many = {**VOICE, **{f"X{i}": "1" for i in range(60)}}
    fine = {**VOICE, **{f"X{i}": "1" for i in range(40)}}
    async with bridge(cfg) as (url, _):
        refused = await post_signed(url, "/voice", many)  # a valid signature over all 64 fields
        accepted = await post_signed(url, "/voice", fine)
    assert (refused.status_code, accepted.status_code) == (413, 200)


async def test_a_stalled_body_gets_408_after_the_body_timeout_and_the_connection_ends() -> None:
    cfg = make_config(server={"body_timeout_s": 0.5})
    form = urlencode(VOICE).encode()
    signature = SignatureChecker(TOKEN).sign("", VOICE)  # never checked: the body never completes
    async with bridge(cfg) as (url, _):
        with trio.fail_after(10):
            stream = await open_request(url, "/voice", {"X-Twilio-Signature": signature},
                                        content_length=len(form))
            await stream.send_all(form[:10])  # then nothing, like a slow-loris body
            answer = await read_response(stream)
            assert await closed_by_peer(stream)
        await stream.aclose()
        genuine = await post_signed(url, "/voice", VOICE)
    assert (answer.status, genuine.status_code) == (408, 200)


async def test_stream_status_has_the_same_limits() -> None:
    async with bridge() as (url, _):
        with trio.fail_after(10):
            unsigned = await open_request(url, "/stream-status", content_length=FOUR_MB)
            await unsigned.send_all(b"a" * 1024)
            first = await read_response(unsigned)
            big = await open_request(url, "/stream-status", {"X-Twilio-Signature": "x"}, content_length=FOUR_MB)
            second = await read_response(big)
        await unsigned.aclose()
        await big.aclose()
    assert (first.status, second.status) == (403, 413)
