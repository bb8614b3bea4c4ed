"""Call control through the real bridge: the fallback when the agent is beyond saving."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from typing import Any

import trio
import trio_websocket

from fakes.twilio_rest import FakeTwilioRest
from support import Leg, bridge, make_config, media_socket


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
