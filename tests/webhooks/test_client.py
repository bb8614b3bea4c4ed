"""twibridge.webhooks.client.post_signed against a real local HTTP server."""

from __future__ import annotations

import httpx
import pytest
import trio

from fakes.tool_backend import tool_backend
from twibridge.webhooks import client as wc
from twibridge.webhooks import signing

SECRET = signing.new_secret()
BODY = wc.encode({"name": "x", "arguments": {"n": "é"}})


async def post(url: str, **kw: object) -> wc.Reply:
    async with httpx.AsyncClient(timeout=None) as http:
        return await wc.post_signed(http, url, BODY, secret=SECRET, timeout_s=2.0, **kw)  # type: ignore[arg-type]


async def test_signed_post_and_the_answer() -> None:
    async with tool_backend(SECRET) as (base, backend):
        reply = await post(base + "/echo", msg_id="msg_fixed")
    assert reply.ok and reply.json() == {"n": "é"}
    req = backend.requests[0]
    assert req.body == BODY and req.headers["webhook-id"] == "msg_fixed"
    assert req.headers["user-agent"] == "twibridge"
    signing.verify(SECRET, req.body, req.headers)


async def test_a_non_2xx_answer_is_a_reply_and_garbage_fails_json() -> None:
    async with tool_backend(SECRET) as (base, _):
        failed = await post(base + "/500")
        garbage = await post(base + "/garbage")
    assert failed.status == 500 and not failed.ok
    with pytest.raises(wc.DeliveryError, match="not valid JSON"):
        garbage.json()


async def test_an_answer_too_large_is_refused() -> None:
    async with tool_backend(SECRET) as (base, _):
        with pytest.raises(wc.DeliveryError, match="larger than 10 bytes"):
            await post(base + "/echo", max_reply_bytes=10)


async def test_never_answers_and_refused(autojump_clock: trio.testing.MockClock) -> None:
    async with tool_backend(SECRET) as (base, _):
        with pytest.raises(wc.DeliveryError, match="no answer within 2 s") as info:
            await post(base + "/never")
    assert "127.0.0.1" not in info.value.reason
    with pytest.raises(wc.DeliveryError, match="connection refused"):
        await post("http://127.0.0.1:9/x")


def test_retry_after() -> None:
    assert wc._retry_after("5") == 5.0 and wc._retry_after("soon") is None and wc._retry_after(None) is None
