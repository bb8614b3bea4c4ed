"""bench.pickup's table: what it reads from each provider's calls (no run: a run is the bench's job)."""

from __future__ import annotations

from bench.pickup import pickup_table


def test_the_table_shows_each_provider_with_and_without_a_greeting_sound() -> None:
    rows = [{"server": "twibridge-openai", "greeting_sound": False, "calls": 3, "measured": 3,
             "pickup_ms": [1180.0, 1170.0, 1175.0]},
            {"server": "twibridge-openai", "greeting_sound": True, "calls": 3, "measured": 2, "pickup_ms": [20.0, 30.0]},
            {"server": "twibridge", "greeting_sound": False, "calls": 2, "measured": 0, "pickup_ms": []}]
    lines = pickup_table(rows).splitlines()
    assert lines[2].startswith("| twibridge-openai | no | 3/3 | 1170") and "1175" in lines[2] and "1180" in lines[2]
    assert lines[3].startswith("| twibridge-openai | yes | 2/3 | 20")
    assert len(lines) == 5 and lines[4].startswith("| twibridge | no | 0/2 |")
