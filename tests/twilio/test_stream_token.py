"""twibridge.twilio.stream_token, alone and in the server: a stream needs the token its /voice minted."""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import trio
import trio_websocket

from support import TOKEN, Leg, bridge, make_config, media_socket, post_signed, sid, silence
from twibridge.agents.base import CallInfo
from twibridge.agents.echo import EchoProvider, EchoSession
from twibridge.config import Config
from twibridge.server.app import make_runtime
from twibridge.simulate import CallOptions, build_report, simulate_call
from twibridge.twilio import stream_token
from twibridge.twilio.stream_token import InvalidStreamToken, check, issue

CALL = sid("CA", 42)
NOW = 1_790_000_000.0

# ------------------------------------------------------------------ sans-IO


def test_a_token_is_good_for_its_call_until_it_expires() -> None:
    token = issue(TOKEN, CALL, NOW)
    check(TOKEN, token, CALL, NOW, 60)
    check(TOKEN, token, CALL, NOW + 60, 60)
    check(TOKEN, token, CALL, NOW - stream_token.CLOCK_SKEW_S, 60)  # another VM's clock a little behind
    assert issue(TOKEN, CALL, NOW) == token and issue(TOKEN, sid("CA", 43), NOW) != token


@pytest.mark.parametrize(("token", "call_sid", "now", "why"), [
    (None, CALL, NOW, "no twibridge_token"),
    ("", CALL, NOW, "no twibridge_token"),
    ("v1.1790000000", CALL, NOW, "malformed"),
    ("v2." + issue(TOKEN, CALL, NOW).partition(".")[2], CALL, NOW, "malformed"),
    ("v1.-5." + issue(TOKEN, CALL, NOW).rpartition(".")[2], CALL, NOW, "malformed"),
    ("v1.99999999999999999999.x", CALL, NOW, "malformed"),
    (issue(TOKEN, CALL, NOW), sid("CA", 43), NOW, "does not match"),  # another call's token
    (issue("another-auth-token", CALL, NOW), CALL, NOW, "does not match"),  # minted with another key
    (issue(TOKEN, CALL, NOW - 1)[:-1] + "A", CALL, NOW, "does not match"),  # tampered
    (issue(TOKEN, CALL, NOW).replace(".1790000000.", ".1790000001."), CALL, NOW, "does not match"),
    (issue(TOKEN, CALL, NOW), CALL, NOW + 61, "expired (61 s old"),
    (issue(TOKEN, CALL, NOW + 30), CALL, NOW, "in the future"),
])
def test_bad_tokens_are_refused_with_the_reason(token: str | None, call_sid: str, now: float, why: str) -> None:
    with pytest.raises(InvalidStreamToken, match=why.replace("(", r"\(")):
        check(TOKEN, token, call_sid, now, 60)


# ------------------------------------------------------------------ in the server


class CallRecordingEcho(EchoProvider):
    """The echo agent, remembering every call it was connected for."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.calls: list[CallInfo] = []
        self._connected = trio.Event()

    async def connect(self, call: CallInfo, nursery: trio.Nursery) -> EchoSession:
        self.calls.append(call)
        self._connected.set()
        self._connected = trio.Event()
        return await super().connect(call, nursery)

    async def wait_calls(self, n: int) -> None:
        with trio.fail_after(5):
            while len(self.calls) < n:
                await self._connected.wait()


def recording_bridge(**sections: Any) -> tuple[Any, CallRecordingEcho]:
    rt = make_runtime(make_config(**sections))
    provider = CallRecordingEcho(rt.config)
    rt.provider_factory = lambda cfg: provider
    return bridge(rt.config, rt), provider


async def voice_token(url: str, call_sid: str) -> str | None:
    """The token /voice puts in the TwiML it answers for ``call_sid`` (None if none)."""
    form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": "+15005550006", "To": "+15005550001"}
    resp = await post_signed(url, "/voice", form)
    assert resp.status_code == 200
    params = {p.get("name"): p.get("value") for p in ET.fromstring(resp.text).iter("Parameter")}
    return params.get(stream_token.PARAMETER)


async def test_the_token_from_voice_opens_the_stream_and_never_reaches_the_agent() -> None:
    server, provider = recording_bridge()
    async with server as (url, rt):
        token = await voice_token(url, CALL)
        assert token is not None
        async with media_socket(url) as ws:
            await Leg(ws, 42).start({"CallSid": CALL, "From": "+15005550006", stream_token.PARAMETER: token},
                                    token=False)
            await provider.wait_calls(1)
    assert provider.calls[0].call_sid == CALL
    assert provider.calls[0].params == {"CallSid": CALL, "From": "+15005550006"}


@pytest.mark.parametrize("bad", ["missing", "another call's", "expired", "forged"])
async def test_a_stream_without_its_token_is_refused_before_any_agent(bad: str, captured_logs) -> None:
    tokens = {"missing": None, "another call's": issue(TOKEN, sid("CA", 7), time.time()),
              "expired": issue(TOKEN, CALL, time.time() - 61), "forged": issue("guessed", CALL, time.time())}
    server, provider = recording_bridge()
    async with server as (url, rt):
        async with media_socket(url) as healthy:  # a good call beside it goes on
            await Leg(healthy, 1).start()
            await provider.wait_calls(1)
            async with media_socket(url) as ws:
                token = tokens[bad]
                await Leg(ws, 42).start({"CallSid": CALL} | ({stream_token.PARAMETER: token} if token else {}),
                                        token=False)
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    with trio.fail_after(5):
                        await ws.get_message()
            assert closed.value.reason.code == 1008
            assert list(rt.calls) == [sid("CA", 1)] and len(provider.calls) == 1
            assert rt.metrics is not None
            assert rt.metrics.calls.labels(outcome="refused_unsigned")._value.get() == 1
    (warning,) = captured_logs.events("ws.bad_stream_token")
    assert warning["call_sid"] == CALL and warning["remote"] == "127.0.0.1"
    assert token is None or token not in captured_logs.text  # the token itself is never logged


async def test_require_stream_token_false_lets_streams_from_other_twiml_in() -> None:
    server, provider = recording_bridge(twilio={"require_stream_token": False})
    async with server as (url, _):
        assert await voice_token(url, CALL) is None
        async with media_socket(url) as ws:
            await Leg(ws, 42).start(token=False)
            await provider.wait_calls(1)
    assert provider.calls[0].call_sid == CALL


async def test_with_signatures_off_there_is_no_token_to_mint_or_check() -> None:
    server, provider = recording_bridge(twilio={"validate_signatures": False})
    async with server as (url, _):
        assert await voice_token(url, CALL) is None
        async with media_socket(url, signature="") as ws:
            await Leg(ws, 42).start(token=False)
            await provider.wait_calls(1)
    assert provider.calls[0].call_sid == CALL


async def test_simulate_call_carries_the_token_and_its_report_hides_it() -> None:
    server, provider = recording_bridge()
    async with server as (url, _):
        with trio.fail_after(30):
            result = await simulate_call(url, TOKEN, silence(300), CallOptions(speed=4.0, tail_s=0.2))
    assert result.ok, result.detail
    assert len(provider.calls) == 1 and stream_token.PARAMETER not in provider.calls[0].params
    report = json.dumps(build_report(result))
    assert f'"{stream_token.PARAMETER}": "(redacted)"' in report
    assert not re.search(r"v1\.\d+\.[\w-]{32}", report)
