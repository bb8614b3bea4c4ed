"""/voice routes each call (static routes, the lookup, refusals) and the stream runs the routed agent."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import trio

from conftest import LogCapture
from fakes.lookup import FakeLookup
from fakes.openai_realtime import API_KEY, FakeRealtime
from support import ACCOUNT_SID, TOKEN, Leg, bridge, make_config, media_socket, post_signed, sid, silence, wait_calls
from twibridge.agents.base import AgentProvider, CallInfo
from twibridge.agents.echo import EchoProvider, EchoSession
from twibridge.config import AgentConfig, Config, build_config
from twibridge.server.app import make_runtime
from twibridge.simulate import CallOptions, simulate_call
from twibridge.webhooks.signing import new_secret

SECRET = new_secret()
AGENTS = {"sales": {"provider": "openai", "openai": {"instructions": "Sales for {from} ({customer_name}). {vip?}"}},
          "night": {}}
ROUTES = [{"to": "+15551230001", "agent": "sales"},
          {"param": {"line": "night"}, "agent": "night", "max_calls": 1, "fallback_say": "Night line busy."}]


class Recorder:
    """A provider factory: the echo agent, remembering each call's agent config and CallInfo."""

    def __init__(self) -> None:
        self.agents: list[AgentConfig] = []
        self.calls: list[CallInfo] = []
        self.changed = trio.Event()

    def __call__(self, cfg: Config) -> AgentProvider:
        self.agents.append(cfg.agent)
        recorder = self

        class Recording(EchoProvider):
            async def connect(self, call: CallInfo, nursery: trio.Nursery) -> EchoSession:
                recorder.calls.append(call)
                recorder.changed.set()
                recorder.changed = trio.Event()
                return await super().connect(call, nursery)

        return Recording(cfg)

    async def wait_calls(self, n: int) -> None:
        with trio.fail_after(5):
            while len(self.calls) < n:
                await self.changed.wait()


def routed_bridge(**routing: Any) -> tuple[Any, Recorder]:
    base = make_config(agent={"openai": {"api_key": "sk-test-0123456789"}}, agents=AGENTS,
                       routing={"variables": {"customer_name": "there"}, **routing})
    cfg = build_config({**base.model_dump(), "routes": ROUTES})
    rt = make_runtime(cfg)
    rt.provider_factory = recorder = Recorder()
    return bridge(cfg, rt), recorder


async def voice(url: str, n: int, to: str = "+15550000000", path: str = "/voice") -> tuple[list[str], dict[str, str]]:
    form = {"CallSid": sid("CA", n), "AccountSid": "AC" + "0" * 32, "From": "+4930123", "To": to}
    resp = await post_signed(url, path, form)
    assert resp.status_code == 200, resp.text
    root = ET.fromstring(resp.text)
    return [c.tag for c in root], {p.get("name", ""): p.get("value", "") for p in root.iter("Parameter")}


async def test_a_route_picks_the_agent_and_the_call_runs_on_it(captured_logs: LogCapture) -> None:
    server, rec = routed_bridge()
    async with server as (url, rt):
        verbs, params = await voice(url, 1, to="+15551230001")
        assert verbs == ["Connect", "Hangup"]
        assert (params["twibridge_agent"], params["twibridge_route"]) == ("sales", "0")
        async with media_socket(url) as ws:
            leg = Leg(ws, 1)
            await leg.start(params, token=False)
            await rec.wait_calls(1)
            await leg.stop()
        await wait_calls(rt, 0)
        assert rt.metrics is not None
        assert rt.metrics.agent_calls.labels(agent="sales")._value.get() == 1
    assert rec.agents[0].provider == "openai"
    assert rec.agents[0].openai.instructions == "Sales for +4930123 (there). "
    call = rec.calls[0]
    assert (call.agent, dict(call.variables)) == ("sales", {"customer_name": "there"})
    assert not any(k.startswith("twibridge_") for k in call.params)
    (ended,) = captured_logs.events("call.ended")
    assert ended["agent"] == "sales"
    assert captured_logs.events("call.started")[0]["agent"] == "sales"


async def test_no_route_is_the_default_agent() -> None:
    server, rec = routed_bridge()
    async with server as (url, _):
        _, params = await voice(url, 2)
        assert "twibridge_agent" not in params
        async with media_socket(url) as ws:
            await Leg(ws, 2).start(params, token=False)
            await rec.wait_calls(1)
    assert rec.calls[0].agent == "default" and rec.agents[0].provider == "echo"


async def test_a_voice_url_parameter_routes_and_a_full_route_plays_its_fallback() -> None:
    server, rec = routed_bridge()
    async with server as (url, rt):
        _, params = await voice(url, 3, path="/voice?line=night")
        assert (params["twibridge_agent"], params["line"]) == ("night", "night")
        async with media_socket(url) as ws:
            await Leg(ws, 3).start(params, token=False)
            await rec.wait_calls(1)
            verbs, _ = await voice(url, 4, path="/voice?line=night")  # max_calls = 1: full
            assert verbs == ["Say", "Hangup"]
            assert rt.metrics is not None
            assert rt.metrics.calls.labels(outcome="refused_busy")._value.get() == 1
    assert rec.calls[0].params["line"] == "night"


async def test_the_lookup_chooses_the_agent_and_fills_the_prompt() -> None:
    fake = FakeLookup(SECRET, answer={"agent": "sales", "variables": {"customer_name": "Ada", "vip": "A VIP."}})
    async with fake.running() as hook:
        server, rec = routed_bridge(webhook=hook, secret=SECRET)
        async with server as (url, rt):
            _, params = await voice(url, 5)  # no route would match: the lookup decides
            assert params["twibridge_agent"] == "sales" and params["twibridge_var_customer_name"] == "Ada"
            async with media_socket(url) as ws:
                await Leg(ws, 5).start(params, token=False)
                await rec.wait_calls(1)
            assert rt.metrics is not None
            assert rt.metrics.routing_lookups.labels(outcome="answered")._value.get() == 1
    assert fake.requests[0].verified
    assert fake.requests[0].body["call"]["from"] == "+4930123"
    assert rec.agents[0].openai.instructions == "Sales for +4930123 (Ada). A VIP."


async def test_the_lookup_refuses_politely() -> None:
    fake = FakeLookup(SECRET, answer={"reject": True, "say": "This line is closed today."})
    async with fake.running() as hook:
        server, rec = routed_bridge(webhook=hook, secret=SECRET)
        async with server as (url, rt):
            form = {"CallSid": sid("CA", 6), "AccountSid": "AC" + "0" * 32, "From": "+4930123", "To": "+1555"}
            resp = await post_signed(url, "/voice", form)
            root = ET.fromstring(resp.text)
            assert [c.tag for c in root] == ["Say", "Hangup"] and root[0].text == "This line is closed today."
            assert rt.metrics is not None
            assert rt.metrics.calls.labels(outcome="refused_rejected")._value.get() == 1
    assert rec.calls == []


async def test_a_lookup_that_fails_leaves_it_to_the_routes(captured_logs: LogCapture) -> None:
    fake = FakeLookup(SECRET, raw=b"not json")
    async with fake.running() as hook:
        server, _ = routed_bridge(webhook=hook, secret=SECRET)
        async with server as (url, _):
            verbs, params = await voice(url, 7, to="+15551230001")
    assert verbs == ["Connect", "Hangup"] and params["twibridge_agent"] == "sales"
    assert captured_logs.events("routing.lookup_failed")[0]["action"] == "the static routes decide"


async def test_a_simulated_call_reaches_the_routed_openai_agent_with_its_prompt_rendered() -> None:
    fake = FakeRealtime(reply_ms=200)
    async with trio.open_nursery() as nursery:
        realtime = await fake.serve(nursery)
        base = make_config(agent={"openai": {"api_key": API_KEY, "url": realtime}}, agents={
            "sales": {"provider": "openai", "openai": {
                "instructions": "Sales desk {to}. Caller {from}, {customer_name}. {{keep}}"}}},
            routing={"variables": {"customer_name": "valued customer"}})
        cfg = build_config({**base.model_dump(), "routes": [{"to": "+15551230001", "agent": "sales"}]})
        async with bridge(cfg) as (url, rt):
            with trio.fail_after(30):
                result = await simulate_call(url, TOKEN, silence(400), CallOptions(
                    account_sid=ACCOUNT_SID, to_number="+15551230001", from_number="+442071234567", speed=4.0, tail_s=0.2))
                while rt.calls:
                    await rt.calls_changed.wait()
        nursery.cancel_scope.cancel()
    assert result.ok, result.detail
    assert fake.sessions[0]["instructions"] == "Sales desk +15551230001. Caller +442071234567, valued customer. {keep}"
