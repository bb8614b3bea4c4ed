"""The signed pre-call lookup against a real local receiver that checks the signature."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from conftest import LogCapture
from fakes.lookup import FakeLookup
from twibridge.config import Config, build_config
from twibridge.routing import CallFacts, problems
from twibridge.routing.lookup import Answer, BadAnswer, ask, parse_answer
from twibridge.webhooks.signing import new_secret

SECRET = new_secret()
CALL = CallFacts("CA" + "1" * 32, "+442071234567", "+15551230001", {"line": "b2b"})


def config(url: str, **routing: Any) -> Config:
    return build_config({"agents": {"sales": {}}, "routing": {"webhook": url, "secret": SECRET, **routing}})


async def test_an_answer_names_the_agent_and_variables() -> None:
    fake = FakeLookup(SECRET, answer={"agent": "sales", "variables": {"customer_name": "Ada", "orders": 3}})
    outcomes: list[str] = []
    async with fake.running() as url:
        answer = await ask(config(url), CALL, on_outcome=outcomes.append)
    assert answer == Answer("sales", {"customer_name": "Ada", "orders": "3"})
    assert outcomes == ["answered"]
    req = fake.requests[0]
    assert req.verified and req.headers["webhook-signature"].startswith("v1,")
    assert req.body == {"call": {"call_sid": CALL.call_sid, "from": "+442071234567", "to": "+15551230001",
                                 "params": {"line": "b2b"}}}


async def test_a_refusal() -> None:
    fake = FakeLookup(SECRET, answer={"reject": True, "say": "We do not take calls from this number."})
    outcomes: list[str] = []
    async with fake.running() as url:
        answer = await ask(config(url), CALL, on_outcome=outcomes.append)
    assert answer == Answer(None, {}, True, "We do not take calls from this number.")
    assert outcomes == ["rejected"]


async def test_no_opinion_leaves_it_to_the_routes() -> None:
    for fake in (FakeLookup(SECRET, answer={}), FakeLookup(SECRET, raw=b"", status=204)):
        async with fake.running() as url:
            assert await ask(config(url), CALL) == Answer()


@pytest.mark.parametrize(("fake_kwargs", "reason"), [
    ({"raw": b"<html>oops</html>"}, "the answer is not valid JSON"),
    ({"answer": ["sales"]}, "the answer is not a JSON object"),
    ({"answer": {"agent": "marketing"}}, "agent: 'marketing' is not a configured agent"),
    ({"answer": {"variables": {"customer name": "Ada"}}}, "variables: 'customer name' is not a variable name"),
    ({"answer": {"variables": {"x": {"nested": 1}}}}, "variables.x: expected a string or a number"),
    ({"answer": {"reject": "yes"}}, "reject: expected true or false"),
    ({"answer": {"agent": "sales"}, "status": 500}, "status 500"),
])
async def test_garbage_is_a_warning_and_the_routes_decide(fake_kwargs: dict[str, Any], reason: str,
                                                          captured_logs: LogCapture) -> None:
    fake = FakeLookup(SECRET, **fake_kwargs)
    outcomes: list[str] = []
    async with fake.running() as url:
        assert await ask(config(url), CALL, on_outcome=outcomes.append) is None
    assert outcomes == ["failed"]
    [line] = captured_logs.events("routing.lookup_failed")
    assert reason in line["reason"] and line["level"] == "warning"
    assert SECRET not in captured_logs.text


async def test_a_receiver_that_refuses_our_signature_is_a_failure(captured_logs: LogCapture) -> None:
    fake = FakeLookup(new_secret(), answer={"agent": "sales"})  # the receiver holds another secret
    async with fake.running() as url:
        assert await ask(config(url), CALL) is None
    assert not fake.requests[0].verified
    assert captured_logs.events("routing.lookup_failed")[0]["reason"] == "status 401"


async def test_a_lookup_that_never_answers_times_out(autojump_clock: trio.testing.MockClock,
                                                     captured_logs: LogCapture) -> None:
    fake = FakeLookup(SECRET, hang=True)
    async with fake.running() as url:
        t0 = trio.current_time()
        assert await ask(config(url, timeout_s=1.5), CALL) is None
        elapsed = trio.current_time() - t0
    assert 1.5 <= elapsed < 1.6
    assert captured_logs.events("routing.lookup_failed")[0]["reason"] == "no answer within 1.5 s"


async def test_a_refused_connection(captured_logs: LogCapture) -> None:
    assert await ask(config("http://127.0.0.1:9/route"), CALL) is None
    assert captured_logs.events("routing.lookup_failed")[0]["reason"] == "connection refused or unreachable"


async def test_no_webhook_no_request() -> None:
    assert await ask(build_config({}), CALL) is None


def test_the_answer_is_bounded() -> None:
    cfg = build_config({})
    with pytest.raises(BadAnswer, match="at most 32 entries"):
        parse_answer({"variables": {f"v{i}": "x" for i in range(33)}}, cfg)
    with pytest.raises(BadAnswer, match="longer than 500"):
        parse_answer({"variables": {"v": "x" * 501}}, cfg)
    assert parse_answer({"agent": "default", "future_key": 1}, cfg) == Answer("default")


def test_the_lookup_must_be_signed_with_a_real_secret() -> None:
    assert problems(build_config({"routing": {"webhook": "https://crm.example.com/r"}}))[0].startswith(
        "routing.secret: required when routing.webhook is set")
    assert problems(build_config({"routing": {"webhook": "https://x.example/r", "secret": "hunter2"}})) == [
        "routing.secret: expected a Standard Webhooks secret, 'whsec_' followed by base64"]
    assert problems(config("https://x.example/r")) == []
