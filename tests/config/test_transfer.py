"""``[transfer]``: who an agent may have us dial."""

from __future__ import annotations

import pytest

from twibridge.config import ConfigError, apply_env, build_config


def transfer(**values: object):  # type: ignore[no-untyped-def]
    return build_config({"transfer": values}).transfer


def test_by_default_only_the_configured_human_may_be_dialled() -> None:
    t = transfer(to="+15550004444")
    assert t.target(None) == ("+15550004444", "")
    assert t.target("+15550004444") == ("+15550004444", "")
    assert t.target("+19005551234") == ("", "not in [transfer] allow")
    assert transfer().target(None, "+15550003333") == ("+15550003333", "")  # [fallback] dial, the older spelling
    assert transfer().target("+15550003333", "+15550003333") == ("+15550003333", "")
    assert transfer().target(None) == ("", "no target: set [transfer] to")


def test_allow_takes_numbers_and_prefixes() -> None:
    t = transfer(allow=["+1555777", "+442071234567"])
    assert t.target("+15557770001")[0] == "+15557770001"
    assert t.target("+442071234567")[0] == "+442071234567"
    assert t.target("+15557780001") == ("", "not in [transfer] allow")
    assert t.target("+1555777; <Dial>") == ("", "not an E.164 number")
    assert t.target(" +15557770001 ")[0] == "+15557770001"


@pytest.mark.parametrize(("values", "line"), [
    ({"to": "555-1234"}, "transfer.to: expected an E.164 number"),
    ({"allow": ["+1555*"]}, "transfer.allow[0]: expected an E.164 number or prefix"),
    ({"allow": ["1555"]}, "transfer.allow[0]"),
    ({"mode": "lukewarm"}, "transfer.mode"),
    ({"ring_timeout_s": 0}, "transfer.ring_timeout_s"),
    ({"announce": "Call from {caller}"}, "transfer.announce: unknown placeholder '{caller}'"),
    ({"mode": "warm"}, "transfer.mode = \"warm\": server.public_url is required"),
])
def test_bad_values_name_the_key(values: dict[str, object], line: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"transfer": values})
    assert any(p.startswith(line) for p in err.value.problems), err.value.problems


def test_env_takes_a_json_list() -> None:
    data = apply_env({}, {"TWIBRIDGE_TRANSFER_ALLOW": '["+1555777"]', "TWIBRIDGE_TRANSFER_TO": "+15550004444"})
    assert build_config(data).transfer.allow == ["+1555777"]


def test_warm_keys_and_their_defaults() -> None:
    cfg = build_config({}).transfer
    assert (cfg.mode, cfg.to, cfg.ring_timeout_s, cfg.announce, cfg.hold_sound) == (
        "cold", "", 20, "Transferring a caller from {from}. {summary}", "")
    ok = build_config({"transfer": {"mode": "warm", "to": "+15550004444", "ring_timeout_s": 30},
                       "server": {"public_url": "https://bridge.example.com"}})
    assert ok.transfer.mode == "warm" and ok.transfer.ring_timeout_s == 30
