"""Signature rules with the known vectors (../shared/reference/twilio-signatures.md)."""

from __future__ import annotations

import pytest

from twibridge.twilio.signature import SignatureChecker, signed_url

V1_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
V1 = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234", "From": "+12349013030",
      "To": "+18005551212"}
V2_URL = "https://bridge.example.com:8443/voice"
V2 = {"AccountSid": "AC00000000000000000000000000000000", "ApiVersion": "2010-04-01",
      "CallSid": "CA11111111111111111111111111111111", "CallStatus": "ringing", "Direction": "inbound",
      "From": "+15005550006", "To": "+15005550001"}
V3_URL = "wss://bridge.example.com/twilio/media"

checker = SignatureChecker("12345")


def test_known_vectors() -> None:
    assert checker.sign(V1_URL, V1) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert checker.valid(V1_URL, V1, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert checker.valid(V2_URL, V2, "A1ieiqPd9fp2vtU+O94QgFRkq5o=")
    assert checker.valid(V3_URL, {}, "hGVJmeOLwZmJhPeWsyRDIvgH8Zc=")


@pytest.mark.parametrize(
    ("url", "params", "sig"),
    [
        (V1_URL, V1, "GvWf1cFY/Q7PnoempGyD5oXAezc="),
        ("https://bridge.example.com/voice", V2, "A1ieiqPd9fp2vtU+O94QgFRkq5o="),
        ("http://bridge.example.com:8443/voice", V2, "A1ieiqPd9fp2vtU+O94QgFRkq5o="),
        (V2_URL, {**V2, "From": "%2B15005550006"}, "A1ieiqPd9fp2vtU+O94QgFRkq5o="),
        ("https://bridge.example.com/twilio/media", {}, "hGVJmeOLwZmJhPeWsyRDIvgH8Zc="),
        (V1_URL, {**V1, "Digits": "1235"}, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
        (V1_URL, V1, ""),
        (V1_URL, V1, None),
    ],
)
def test_negative_cases(url: str, params: dict, sig: str | None) -> None:
    assert not checker.valid(url, params, sig)


def test_positive_edge_cases() -> None:
    assert checker.valid("https://mycompany.com:443/myapp.php?foo=1&bar=2", V1, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert checker.valid("wss://bridge.example.com:443/twilio/media", {}, "hGVJmeOLwZmJhPeWsyRDIvgH8Zc=")
    assert checker.valid(V1_URL, dict(reversed(list(V1.items()))), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")


def test_signed_url_behind_a_proxy() -> None:
    # the app sees http://127.0.0.1:8080; Twilio signed the public https URL
    assert signed_url("https://bridge.example.com", "http", "127.0.0.1:8080", "/voice") == \
        "https://bridge.example.com/voice"
    assert signed_url("https://bridge.example.com", "ws", "127.0.0.1:8080", "/media-stream", websocket=True) == \
        "wss://bridge.example.com/media-stream"
    assert signed_url("https://bridge.example.com:8443", "http", "x", "/voice", "a=1") == \
        "https://bridge.example.com:8443/voice?a=1"
    # without public_url: the request's own scheme and host
    assert signed_url("", "http", "127.0.0.1:5000", "/voice") == "http://127.0.0.1:5000/voice"
    assert signed_url("", "ws", "127.0.0.1:5000", "/media-stream", websocket=True) == "ws://127.0.0.1:5000/media-stream"
