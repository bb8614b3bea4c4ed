"""A warm transfer end to end through a real ``twibridge serve`` process.

Twilio's whole side is played by the test: the signed ``/voice`` webhook,
the Media Stream opened with the TwiML's ``<Parameter>``s (stream token
included), and the fake REST API that rings the human and posts the leg's
signed status callbacks to ``public_url``.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from fakes.hostile_agent import HostileAgent
from fakes.twilio_rest import ACCOUNT_SID, OWNED_NUMBER, FakeTwilioRest
from process_support import ServerProcess, base_env
from support import Leg, media_socket, post_signed, sid
from twibridge.handoff import conference

CONFIG = """
[server]
public_url = "http://127.0.0.1:{port}"
[twilio]
account_sid = "{account}"
api_base_url = "{rest}"
[agent]
provider = "websocket"
[agent.websocket]
url = "{agent}"
[transfer]
mode = "warm"
to = "+15550004444"
ring_timeout_s = 10
announce = "A caller from {{from}}. {{summary}}"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("answer", ["human", "no-answer"])
async def test_warm_transfer_through_a_real_serve(answer: str, tmp_path: Path) -> None:
    agent = HostileAgent(lambda conn: [{"type": "transfer", "summary": "Refund for order 42."}] if conn == 1 else [])
    twilio = FakeTwilioRest()
    port = free_port()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, twilio.running() as rest_url:
            agent_url = await agent.serve(nursery)
            path = tmp_path / "twibridge.toml"
            path.write_text(CONFIG.format(port=port, account=ACCOUNT_SID, rest=rest_url, agent=agent_url))
            sp = ServerProcess(base_env(), [sys.executable, "-m", "twibridge", "serve", "--config", str(path),
                                            "--host", "127.0.0.1", "--port", str(port)])
            await sp.start(nursery)
            try:
                call_sid = sid("CA", 71)
                form = {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "From": "+15557654321", "To": OWNED_NUMBER}
                resp = await post_signed(sp.url, "/voice", form)
                params = {p.get("name", ""): p.get("value", "") for p in ET.fromstring(resp.text).iter("Parameter")}
                twilio.add_call(call_sid)
                async with media_socket(sp.url) as ws:
                    leg = Leg(ws, 71)
                    await leg.start(params, token=False)  # the TwiML's parameters, stream token and all
                    (human,) = await twilio.recorder.wait_for(twilio.placed, timeout=20)
                    said = ET.fromstring(human.twiml[0]).findtext("Say")
                    assert said == "A caller from 1 5 5 5 7 6 5 4 3 2 1. Refund for order 42."
                    await leg.collect(until_ms_of_audio=300, idle_s=5)  # the hold sound
                    assert await twilio.advance(human.sid, "ringing") == 204
                    if answer == "no-answer":
                        assert await twilio.advance(human.sid, "no-answer") == 204
                        (failed,) = await agent.wait_for(lambda: agent.of_type("transfer_failed"), timeout=20)
                        assert failed["reason"].startswith("nobody answered (no-answer)")
                        assert twilio.calls[call_sid].twiml == []  # the caller stays with the agent
                        await leg.stop()
                    else:
                        assert await twilio.advance(human.sid, "in-progress", "human") == 204
                        caller = twilio.calls[call_sid]
                        with contextlib.suppress(ConnectionClosed):  # the bridge closes the stream once moved
                            while not caller.twiml:
                                await leg.collect(idle_s=0.2)  # keep reading, as Twilio does
                        name = conference.conference_name(call_sid)
                        assert ET.fromstring(caller.twiml[0]).findtext("Dial/Conference") == name
                        assert twilio.conferences == {name: [human.sid, call_sid]}
                ended = await sp.wait_for(lambda line: line.get("event") == "call.ended", timeout=20)
                outcome = "answered" if answer == "human" else "no-answer"
                assert ended["outcome"] == ("transferred" if answer == "human" else "completed")
                assert ended["transfers"][0]["outcome"] == outcome
                assert [e["delivered"] for e in sp.events("transfer.status")] == [True, True]
            finally:
                assert await sp.stop() == 0
            nursery.cancel_scope.cancel()
