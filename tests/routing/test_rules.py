"""The routing decision (sans-IO): each key, first match wins, the default, hours on a fixed clock, max_calls."""

from __future__ import annotations

from datetime import datetime, timezone

from twibridge.config import build_config
from twibridge.routing import Answer, CallFacts, decide

# Thursday 3 December 2026, 10:00 in Berlin.
OPEN = datetime(2026, 12, 3, 9, 0, tzinfo=timezone.utc)
NIGHT = datetime(2026, 12, 3, 22, 0, tzinfo=timezone.utc)

CFG = build_config({
    "agents": {"sales": {}, "uk": {}, "vip": {}, "office": {}, "night": {}},
    "fallback": {"say": "Sorry.", "dial": ""},
    "routes": [
        {"to": "+15551230001", "agent": "sales"},
        {"from_prefix": "+44", "agent": "uk"},
        {"param": {"line": "vip"}, "agent": "vip"},
        {"to": "+15551230002", "hours": "mon-fri 09:00-17:30", "timezone": "Europe/Berlin", "agent": "office"},
        {"to": "+15551230002", "agent": "night", "max_calls": 2, "fallback_say": "All lines busy.",
         "fallback_dial": "+15551239999"},
    ],
})


def call(to: str = "+15550000000", from_: str = "+15559990000", **params: str) -> CallFacts:
    return CallFacts("CA1", from_, to, params)


def test_each_key_routes() -> None:
    assert decide(CFG, call(to="+15551230001"), OPEN).agent == "sales"
    assert decide(CFG, call(from_="+442071234567"), OPEN).agent == "uk"
    assert decide(CFG, call(line="vip"), OPEN).agent == "vip"


def test_first_match_wins_in_file_order() -> None:
    d = decide(CFG, call(to="+15551230001", from_="+442071234567", line="vip"), OPEN)
    assert (d.agent, d.route, d.why) == ("sales", 0, "routes.0 matched (to = +15551230001)")


def test_no_match_is_the_default_agent_and_says_why_each_route_did_not_match() -> None:
    d = decide(CFG, call(line="other"), OPEN)
    assert (d.agent, d.route, d.refuse) == ("default", None, False)
    assert d.why == "no route matched: [agent]"
    assert d.skipped[0] == "routes.0: to is +15550000000, not +15551230001"
    assert d.skipped[1] == "routes.1: from +15559990000 does not start with +44"
    assert d.skipped[2] == "routes.2: param.line is 'other', not 'vip'"
    assert decide(build_config({}), call(), OPEN).why == "no routes: [agent]"


def test_hours_and_timezone_on_a_fixed_clock() -> None:
    assert decide(CFG, call(to="+15551230002"), OPEN).agent == "office"
    d = decide(CFG, call(to="+15551230002"), NIGHT)
    assert (d.agent, d.route) == ("night", 4)
    assert "routes.3: outside hours (mon-fri 09:00-17:30, Europe/Berlin)" in d.skipped


def test_a_full_route_answers_with_its_fallback() -> None:
    d = decide(CFG, call(to="+15551230002"), NIGHT, active=lambda i: 2 if i == 4 else 0)
    assert (d.refuse, d.say, d.dial, d.route) == (True, "All lines busy.", "+15551239999", 4)
    assert "full (2 calls)" in d.why
    assert not decide(CFG, call(to="+15551230002"), NIGHT, active=lambda i: 1).refuse


def test_the_lookup_comes_first() -> None:
    d = decide(CFG, call(to="+15551230001"), OPEN, answer=Answer("vip", {"customer_name": "Ada"}))
    assert (d.agent, d.route, dict(d.variables)) == ("vip", None, {"customer_name": "Ada"})
    d = decide(CFG, call(to="+15551230001"), OPEN, answer=Answer(variables={"tier": "gold"}))
    assert (d.agent, d.route, dict(d.variables)) == ("sales", 0, {"tier": "gold"})  # no agent named: routes decide
    d = decide(CFG, call(to="+15551230001"), OPEN, answer=Answer(reject=True, say="We are closed."))
    assert (d.refuse, d.say, d.dial) == (True, "We are closed.", "")
    assert decide(CFG, call(), OPEN, answer=Answer(reject=True)).say == "Sorry."  # [fallback] say
