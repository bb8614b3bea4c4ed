"""[recording], [redact], [webhooks]: validated at load, one line naming the key."""

from __future__ import annotations

import pytest

from twibridge.config import ConfigError, build_config
from twibridge.config.records import _secret_problem
from twibridge.webhooks import signing


def problems(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        build_config(data)
    return exc.value.problems


def test_defaults_are_off() -> None:
    cfg = build_config({})
    assert not cfg.recording.enabled and cfg.webhooks.call_ended == "" and cfg.redact.patterns == ["card", "ssn"]


def test_bad_values_name_their_key() -> None:
    assert problems({"redact": {"patterns": ["cards"]}}) == [
        "redact.patterns: unknown pattern 'cards' (built-in: card, ssn, email)"]
    assert problems({"redact": {"extra": ["ok", "(unclosed"]}})[0].startswith(
        "redact.extra[1]: not a valid regular expression")
    assert problems({"redact": {"extra": ["x*"]}})[0].startswith("redact.extra[0]: matches the empty string")
    assert problems({"recording": {"pause_digits": "*A"}})[0].startswith("recording.pause_digits: DTMF keys only")
    assert problems({"webhooks": {"call_ended": "ftp://x"}}) == ["webhooks.call_ended: expected an http(s):// URL"]
    assert problems({"webhooks": {"call_ended": "https://x/hook"}})[0].startswith("webhooks.secret: expected")


def test_secret_is_a_secret_and_env_named() -> None:
    secret = signing.new_secret()
    cfg = build_config({"webhooks": {"call_ended": "https://x/hook", "secret": secret}})
    assert secret in cfg.secrets() and secret not in repr(cfg)
    from twibridge.config import ENV_NAMES

    assert ENV_NAMES["TWIBRIDGE_WEBHOOKS_SECRET"] == ("webhooks", "secret")
    assert ENV_NAMES["TWIBRIDGE_RECORDING_PAUSE_DIGITS"] == ("recording", "pause_digits")


@pytest.mark.parametrize("secret", ["", "abc", "whsec_", "whsec_c2hvcnQ=", signing.new_secret(), "whsec_!!!"])
def test_secret_check_matches_the_signers(secret: str) -> None:
    assert (_secret_problem(secret) is None) == (signing.secret_problem(secret) is None)
