"""Redaction: the patterns, and a card number said on a call reaching no output unredacted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket

from fakes.receiver import receiver
from redis_support import RedisServer, redis_server  # noqa: F401 (fixture)
from support import Leg, bridge, frames, make_config, media_socket, silence, tone
from twibridge.agents.base import CallInfo, Transcript
from twibridge.agents.echo import EchoProvider, EchoSession
from twibridge.config import Config
from twibridge.records.redact import Redactor, luhn_ok
from twibridge.server.app import make_runtime
from twibridge.webhooks import signing

CARD = "4242 4242 4242 4242"
SAID = f"my card is {CARD}, ssn 123-45-6789, mail jane.doe@example.com"


def test_builtins() -> None:
    r = Redactor(["card", "ssn", "email"])
    assert r(SAID) == "my card is [redacted:card], ssn [redacted:ssn], mail [redacted:email]"
    assert r("4111-1111-1111-1111 and 4111111111111111") == "[redacted:card] and [redacted:card]"
    # not Luhn-valid: an order number stays; too short to be a card stays
    assert r("order 1234 5678 9012 3456") == "order 1234 5678 9012 3456"
    assert r("call 555 0100") == "call 555 0100"
    assert r("000-12-3456 is never issued") == "000-12-3456 is never issued"
    assert luhn_ok("4242424242424242") and not luhn_ok("4242424242424241")


def test_only_what_is_configured_and_extra_regexes() -> None:
    assert Redactor(["card"])("jane@example.com") == "jane@example.com"
    r = Redactor([], [r"\border [0-9]{6}\b", r"(?i)password is \S+"])
    assert r("Order 123456 / order 654321, password is hunter2") == "Order 123456 / [redacted], [redacted]"
    with pytest.raises(ValueError):
        Redactor(["cards"])


class _Talker(EchoSession):
    """The echo agent that also reports the caller saying a card number."""

    def __init__(self, config: Config, call: CallInfo) -> None:
        super().__init__(config, call)
        self._said = False

    async def send_audio(self, ulaw: bytes) -> None:
        if not self._said:
            self._said = True
            await self._send.send(Transcript("user", SAID))
            await self._send.send(Transcript("assistant", f"I heard {CARD}."))
        await super().send_audio(ulaw)


class _TalkerProvider(EchoProvider):
    async def connect(self, call: CallInfo, nursery: trio.Nursery) -> EchoSession:
        return _Talker(self.config, call)


async def test_a_card_number_said_reaches_no_output(tmp_path: Path, captured_logs: Any,
                                                    redis_server: RedisServer) -> None:
    secret = signing.new_secret()
    async with receiver(secret) as rx:
        cfg = make_config(webhooks={"call_ended": rx.url, "secret": secret, "spool_dir": str(tmp_path)},
                          redact={"patterns": ["card", "ssn", "email"]},
                          state={"backend": "redis", "redis_url": redis_server.url, "keep_transcripts": True})
        rt = make_runtime(cfg)
        rt.provider_factory = _TalkerProvider
        async with bridge(cfg, rt) as (url, rt):
            async with media_socket(url) as ws:
                leg = Leg(ws, 7)
                await leg.start()
                for f in frames(tone(300) + silence(600)):
                    await leg.media(f)
                await leg.collect(until_ms_of_audio=100)  # the agent has heard (and said) it all
                await leg.stop()
                with pytest.raises(trio_websocket.ConnectionClosed):
                    await leg.collect(idle_s=3)
            (got,) = await rx.wait(1, delivered=True)
            with trio.fail_after(5):
                while rt.calls:
                    await rt.calls_changed.wait()
    raw = redis_server.client().get(f"twibridge:summary:{leg.call_sid}")
    kept = redis_server.client().get(f"twibridge:transcript:{leg.call_sid}")  # keep_transcripts: its own key
    assert raw is not None and kept is not None
    outputs = {"webhook": got.body.decode(), "redis": raw + kept, "logs": captured_logs.text,
               "spool": "".join(p.read_text() for p in tmp_path.rglob("*.json"))}
    for name, text in outputs.items():
        for secret_bit in ("4242", "123-45-6789", "jane.doe"):
            assert secret_bit not in text, (name, secret_bit)
    transcript = got.json()["transcript"]
    assert [t["text"] for t in transcript] == [
        "my card is [redacted:card], ssn [redacted:ssn], mail [redacted:email]", "I heard [redacted:card]."]
    assert json.loads(kept)[0]["text"].startswith("my card is [redacted:card]")
    assert any(line.get("event") == "call.transcript" for line in captured_logs.lines)


def test_a_card_beside_other_numbers() -> None:
    r = Redactor(["card"])
    assert r("option 2 4111 1111 1111 1111") == "option 2 [redacted:card]"
    assert r("4111 1111 1111 1111 12 25") == "[redacted:card] 12 25"


def test_a_card_inside_a_long_run_of_numbers() -> None:
    assert Redactor(["card"])("call 555 0100 4111 1111 1111 1111") == "call 555 0100 [redacted:card]"
