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

from support import ACCOUNT_SID, TOKEN, Leg, bridge, make_config, media_socket, post_signed, sid, silence
from twibridge.agents.base import CallInfo
from twibridge.agents.echo import EchoProvider, EchoSession
from twibridge.config import Config
from twibridge.server.app import make_runtime
from twibridge.simulate import CallOptions, build_report, simulate_call
from twibridge.twilio import stream_token
from twibridge.twilio.stream_token import InvalidStreamToken, check, issue

CALL = sid("CA", 42)
NOW = 1_790_000_000.0
PARAMS = {"CallSid": CALL, "From": "+15005550006", "To": "+15005550001"}


def mint(secret: str = TOKEN, call_sid: str = CALL, now: float = NOW, account_sid: str = ACCOUNT_SID,
         params: dict[str, str] | None = None) -> str:
    return issue(secret, account_sid=account_sid, call_sid=call_sid, params=PARAMS if params is None else params,
                 now=now)


def verify(token: str | None, call_sid: str = CALL, now: float = NOW, account_sid: str = ACCOUNT_SID,
           params: dict[str, str] | None = None) -> str:
    custom = dict(PARAMS if params is None else params)
    if token is not None:
        custom[stream_token.PARAMETER] = token  # as customParameters carry it: ignored by the digest
    return check(TOKEN, token, account_sid=account_sid, call_sid=call_sid, params=custom, now=now, ttl_s=60)

# ------------------------------------------------------------------ sans-IO


def test_a_token_is_good_for_its_call_until_it_expires() -> None:
    token = mint()
    tid = verify(token)
    assert verify(token, now=NOW + 60) == tid
    verify(token, now=NOW - stream_token.CLOCK_SKEW_S)  # another VM's clock a little behind
    assert mint() == token and mint(call_sid=sid("CA", 43)) != token
    assert token not in tid and len(tid) == 32  # the id (for single use) is not the token


@pytest.mark.parametrize(("token", "change", "why"), [
    (None, {}, "no twibridge_token"),
    ("", {}, "no twibridge_token"),
    ("v2.1790000000", {}, "malformed"),
    ("v1." + mint().partition(".")[2], {}, "malformed"),  # the old format
    ("v2.-5." + mint().rpartition(".")[2], {}, "malformed"),
    ("v2.99999999999999999999.x", {}, "malformed"),
    (mint(), {"call_sid": sid("CA", 43)}, "does not match"),  # another call's token
    (mint(), {"account_sid": "AC" + "1" * 32}, "does not match"),  # another account
    (mint(), {"params": PARAMS | {"From": "+19005551234"}}, "does not match"),  # From changed
    (mint(), {"params": PARAMS | {"To": "+19005551234"}}, "does not match"),  # To changed
    (mint(), {"params": PARAMS | {"agent": "sales"}}, "does not match"),  # a parameter added
    (mint(), {"params": {"CallSid": CALL, "From": "+15005550006"}}, "does not match"),  # one dropped
    (mint(params=PARAMS | {"agent": "sales"}), {"params": PARAMS | {"agent": "admin"}}, "does not match"),
    (mint(params={"CallSid": CALL, "From": "a", "To": "bc"}), {"params": {"CallSid": CALL, "From": "ab", "To": "c"}},
     "does not match"),  # a boundary moved between values
    (mint(secret="another-auth-token"), {}, "does not match"),  # minted with another key
    (mint(now=NOW - 1)[:-1] + "A", {}, "does not match"),  # tampered
    (mint().replace(".1790000000.", ".1790000001."), {}, "does not match"),
    (mint(), {"now": NOW + 61}, "expired (61 s old"),
    (mint(now=NOW + 30), {}, "in the future"),
])
def test_bad_tokens_are_refused_with_the_reason(token: str | None, change: dict[str, Any], why: str) -> None:
    with pytest.raises(InvalidStreamToken, match=why.replace("(", r"\(")):
        verify(token, **change)


def test_the_digest_covers_every_parameter_but_the_token_itself() -> None:
    assert stream_token.params_digest(PARAMS) == stream_token.params_digest(
        {**dict(reversed(list(PARAMS.items()))), stream_token.PARAMETER: "anything"})  # order and token ignored
    assert stream_token.params_digest(PARAMS) != stream_token.params_digest(PARAMS | {"x": ""})


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
            # customParameters carry back every <Parameter> of the TwiML, as Twilio's do
            await Leg(ws, 42).start(PARAMS | {stream_token.PARAMETER: token}, token=False)
            await provider.wait_calls(1)
    assert provider.calls[0].call_sid == CALL
    assert provider.calls[0].params == PARAMS


@pytest.mark.parametrize("bad", ["missing", "another call's", "expired", "forged"])
async def test_a_stream_without_its_token_is_refused_before_any_agent(bad: str, captured_logs) -> None:
    params = {"CallSid": CALL}
    tokens = {"missing": None, "another call's": mint(call_sid=sid("CA", 7), now=time.time(), params=params),
              "expired": mint(now=time.time() - 61, params=params),
              "forged": mint(secret="guessed", now=time.time(), params=params)}
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
            result = await simulate_call(url, TOKEN, silence(300), CallOptions(account_sid=ACCOUNT_SID, speed=4.0, tail_s=0.2))
    assert result.ok, result.detail
    assert len(provider.calls) == 1 and stream_token.PARAMETER not in provider.calls[0].params
    report = json.dumps(build_report(result))
    assert f'"{stream_token.PARAMETER}": "(redacted)"' in report
    assert not re.search(r"v\d+\.\d+\.[\w-]{32}", report)
