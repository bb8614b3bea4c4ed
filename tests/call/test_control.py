"""Call control through the real bridge: the fallback when the agent is beyond saving, and what a
hostile agent may (not) make us do: transfers only where ``[transfer]`` allows, REST only under
``[twilio] account_sid`` and only for proven streams."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
import trio
import trio_websocket

from fakes.hostile_agent import HostileAgent
from fakes.twilio_rest import FakeTwilioRest
from support import ACCOUNT_SID, Leg, bridge, make_config, media_socket


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_agent_plays_the_fallback_say_and_dial(captured_logs: Any) -> None:
    twilio = FakeTwilioRest()
    async with twilio.running() as rest_url:
        cfg = make_config(
            twilio={"api_base_url": rest_url},
            agent={"provider": "websocket", "websocket": {"url": f"ws://127.0.0.1:{closed_port()}/agent"},
                   "reconnect_attempts": 1, "reconnect_backoff_s": 0.01, "reconnect_backoff_max_s": 0.02,
                   "connect_timeout_s": 1},
            fallback={"say": "Sorry, our assistant is unavailable.", "dial": "+15550003333"},
        )
        with trio.fail_after(20):
            async with bridge(cfg) as (url, rt):
                async with media_socket(url) as ws:
                    leg = Leg(ws, 11)
                    twilio.add_call(leg.call_sid)
                    await leg.start()
                    try:
                        await leg.collect(idle_s=5)
                    except trio_websocket.ConnectionClosed:
                        pass  # the bridge ends the stream after the fallback
                while rt.calls:
                    await rt.calls_changed.wait()
    (req,) = twilio.requests
    twiml = ET.fromstring(req.form["Twiml"][0])
    assert [c.tag for c in twiml] == ["Say", "Dial", "Hangup"]
    assert twiml.findtext("Say") == "Sorry, our assistant is unavailable." and twiml.findtext("Dial") == "+15550003333"
    (ended,) = captured_logs.events("call.ended")
    assert ended["outcome"] == "agent-failed"
    assert len(captured_logs.events("agent.disconnected")) == 2  # first try + one reconnect
    assert captured_logs.events("control.fallback_played")


async def test_without_rest_credentials_the_fallback_is_skipped_with_a_warning(captured_logs: Any) -> None:
    cfg = make_config(
        twilio={"account_sid": ""},
        agent={"provider": "websocket", "websocket": {"url": f"ws://127.0.0.1:{closed_port()}/agent"},
               "reconnect_attempts": 0, "connect_timeout_s": 1},
    )
    with trio.fail_after(20):
        async with bridge(cfg) as (url, rt):
            async with media_socket(url) as ws:
                await Leg(ws, 12).start()
                try:
                    await Leg(ws, 12).collect(idle_s=5)
                except trio_websocket.ConnectionClosed as exc:
                    assert exc.reason.code == 1000  # closing runs the TwiML's <Hangup/>
    (warning,) = captured_logs.events("control.rest_unavailable")
    assert warning["action"] == "fallback" and "account_sid" in warning["problems"][0]


# ------------------------------------------------------------------ issue #23: what an agent may make us do


@asynccontextmanager
async def hostile_call(script: list[Any], *, n: int = 21, **sections: Any) -> AsyncIterator[
        tuple[HostileAgent, FakeTwilioRest, Leg, Any]]:
    """A live call through the real bridge to an agent that sends ``script`` after ``start``."""
    agent = HostileAgent(lambda conn: script if conn == 1 else [])
    twilio = FakeTwilioRest()
    async with trio.open_nursery() as nursery, twilio.running() as rest_url:
        agent_url = await agent.serve(nursery)
        cfg = make_config(twilio={"api_base_url": rest_url, **sections.pop("twilio", {})},
                          agent={"provider": "websocket", "websocket": {"url": agent_url}}, **sections)
        async with bridge(cfg) as (url, rt), media_socket(url) as ws:
            leg = Leg(ws, n)
            twilio.add_call(leg.call_sid)
            await leg.start()
            yield agent, twilio, leg, rt
        nursery.cancel_scope.cancel()


async def test_an_agent_cannot_transfer_to_a_number_nobody_allowed(captured_logs: Any) -> None:
    """Toll fraud: transfer{to: +1900…} is refused, logged, reported to the agent; the call goes on."""
    with trio.fail_after(20):
        async with hostile_call([{"type": "transfer", "to": "+19005551234"}],
                                fallback={"dial": "+15550003333"}) as (agent, twilio, leg, rt):
            (failed,) = await agent.wait_for(lambda: agent.of_type("transfer_failed"))
            assert "not in [transfer] allow" in failed["reason"]
            assert list(rt.calls) == [leg.call_sid]  # still talking to the agent
            await leg.stop()
    assert twilio.requests == []  # nothing was dialled
    (refusal,) = captured_logs.events("control.transfer_refused")
    assert refusal["requested"] == "+19005551234"
    assert captured_logs.events("call.ended")[0]["outcome"] == "completed"


@pytest.mark.parametrize(("transfer", "requested", "dialled"), [
    ({"allow": ["+1900555"]}, "+19005551234", "+19005551234"),  # an allowed prefix
    ({"to": "+15550004444"}, "+15550004444", "+15550004444"),  # the configured human, named
    ({"to": "+15550004444"}, None, "+15550004444"),  # no target named: the configured human
])
async def test_allowed_targets_are_dialled_under_the_configured_account(
        transfer: dict[str, Any], requested: str | None, dialled: str) -> None:
    message = {"type": "transfer"} | ({"to": requested} if requested else {})
    with trio.fail_after(20):
        async with hostile_call([message], transfer=transfer) as (agent, twilio, leg, rt):
            await twilio.recorder.wait_for(lambda: twilio.requests)
    (req,) = twilio.requests
    assert req.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{leg.call_sid}.json"
    assert ET.fromstring(req.form["Twiml"][0]).findtext("Dial/Number") == dialled


@pytest.mark.parametrize("trust", [False, True])
async def test_without_stream_tokens_agent_call_control_is_off_unless_trusted(trust: bool,
                                                                              captured_logs: Any) -> None:
    """Tokens off: the CallSid is unproven, so the agent's hang-up must not reach Twilio's REST
    (it could name any call of the account) — unless trust_unsigned_streams says so."""
    with trio.fail_after(20):
        async with hostile_call([{"type": "hangup"}], twilio={"require_stream_token": False,
                                                                "trust_unsigned_streams": trust}) as (agent, twilio, leg, rt):
            with pytest.raises(trio_websocket.ConnectionClosed):
                await leg.collect(idle_s=5)  # the call ends either way (the TwiML's <Hangup/> follows)
    assert [r.form.get("Status") for r in twilio.requests] == ([["completed"]] if trust else [])
    assert bool(captured_logs.events("control.untrusted_stream")) is not trust
    assert captured_logs.events("call.ended")[0]["outcome"] == "agent-hangup"
