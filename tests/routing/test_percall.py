"""The decision in <Parameter>s and back, and the config one call runs on."""

from __future__ import annotations

from twibridge.config import build_config
from twibridge.routing import CallFacts, Decision
from twibridge.routing.percall import (
    CallRouting, allowed_tools, from_parameters, parameters, prepare, public_params, query_params,
)
from twibridge.webhooks import signing

KEY = "sk-test-0123456789"
CFG = build_config({
    "agent": {"provider": "openai", "openai": {"api_key": KEY, "instructions": "Default for {from}."}},
    "agents": {"sales": {"openai": {"instructions": "Sales. Caller {from} dialed {to} ({call_sid}); "
                                                     "line {param.line}. {customer_name} {nick?}"}},
               "v": {"provider": "vapi", "vapi": {"api_key": KEY, "assistant": {
                   "firstMessage": "Hello {customer_name}!", "model": {"messages": [
                       {"role": "system", "content": "Caller {from}."}]}}}}},
    "routes": [{"to": "+15551230001", "agent": "sales", "fallback_say": "Sales is busy.", "tools": ["lookup_order"]}],
    "routing": {"variables": {"customer_name": "there"}},
    "tools": {"secret": signing.new_secret(), "functions": [  # what a route's `tools` may name
        {"name": "lookup_order", "description": "Look up an order", "url": "https://crm.example.com/lookup"}]},
})


def test_parameters_round_trip() -> None:
    facts = CallFacts("CA1", "+4930", "+15551230001", {"line": "b2b"})
    params = parameters(Decision("sales", 0, "routes.0 matched", {"customer_name": "Ada"}), facts)
    assert params == {"line": "b2b", "twibridge_agent": "sales", "twibridge_route": "0",
                      "twibridge_var_customer_name": "Ada"}
    custom = {"CallSid": "CA1", "From": "+4930", "To": "+15551230001", "twibridge_token": "v1.x", **params}
    assert from_parameters(custom, CFG) == CallRouting("sales", 0, {"customer_name": "Ada"})
    assert public_params(custom) == {"CallSid": "CA1", "From": "+4930", "To": "+15551230001", "line": "b2b"}
    # an unrouted call's parameters stay as they were
    assert parameters(Decision("default", None, "no routes"), CallFacts("CA1", "", "")) == {}


def test_a_stale_or_forged_decision_falls_back_to_the_default() -> None:
    assert from_parameters({"twibridge_agent": "gone"}, CFG).agent == "default"
    assert from_parameters({"twibridge_agent": "v", "twibridge_route": "0"}, CFG).route is None  # not v's route
    assert from_parameters({"twibridge_agent": "sales", "twibridge_route": "7"}, CFG).route is None
    assert from_parameters({}, CFG) == CallRouting()


def test_query_params_are_bounded_and_never_internal() -> None:
    q = {"line": "a", "twibridge_agent": "x", "CallSid": "y", "bad name": "z", **{f"p{i}": "v" for i in range(30)}}
    out = query_params(q)
    assert out["line"] == "a" and "twibridge_agent" not in out and "CallSid" not in out and "bad name" not in out
    assert len(out) == 16


def test_the_call_config_renders_the_routed_agent() -> None:
    custom = {"CallSid": "CA9", "From": "+4930", "To": "+15551230001", "line": "b2b",
              "twibridge_agent": "sales", "twibridge_route": "0"}
    cfg, routed, params = prepare(CFG, custom, "CA9")
    assert cfg.agent.openai.instructions == "Sales. Caller +4930 dialed +15551230001 (CA9); line b2b. there "
    assert cfg.agent.openai.api_key.get_secret_value() == KEY
    assert cfg.fallback.say == "Sales is busy."
    assert routed.variables == {"customer_name": "there"}  # the declared default
    assert allowed_tools(cfg, routed) == ("lookup_order",)
    assert params["line"] == "b2b" and "twibridge_agent" not in params
    assert CFG.agents["sales"].openai.instructions.startswith("Sales. Caller {from}")  # the snapshot is untouched


def test_lookup_variables_win_over_defaults_and_vapi_first_messages_render() -> None:
    custom = {"From": "+4930", "twibridge_agent": "v", "twibridge_var_customer_name": "Ada"}
    cfg, routed, _ = prepare(CFG, custom, "CA9")
    assert cfg.agent.provider == "vapi"
    assert cfg.agent.vapi.assistant["firstMessage"] == "Hello Ada!"
    assert cfg.agent.vapi.assistant["model"]["messages"][0]["content"] == "Caller +4930."
    assert allowed_tools(cfg, routed) is None
    default_cfg, _, _ = prepare(CFG, {"From": "+1555"}, "CA9")
    assert default_cfg.agent.openai.instructions == "Default for +1555."
    assert default_cfg.fallback == CFG.fallback
