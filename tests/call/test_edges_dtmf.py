"""The send_dtmf built-in: tones on the caller's stream that a phone menu decodes back to the digits."""

from __future__ import annotations

import json
from typing import Any

import trio

from support import dtmf_decode as decode
from twibridge.call.edges import Edges
from twibridge.call.idle import IdleWatch
from twibridge.call.speaker import Speaker
from twibridge.config import TurnsConfig
from twibridge.twilio import emulation as emu
from twibridge.twilio import protocol as tw


async def play(digits: object) -> tuple[dict[str, object], bytes]:
    sent: list[str] = []

    async def send(msg: str) -> None:
        sent.append(msg)

    speaker = Speaker(TurnsConfig(), send, trio.Lock())
    speaker.stream_sid = "MZ" + "0" * 32
    edges = Edges(speaker, IdleWatch(0, 0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(speaker.run)
        result = edges.send_dtmf(digits)
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    audio = b"".join(ev.payload for m in sent if isinstance(ev := emu.parse_from_bridge(m, speaker.stream_sid),
                                                                  tw.OutMedia))
    return result, audio


async def test_digits_are_played_and_decode_back(autojump_clock: Any) -> None:
    result, audio = await play("1*0#")
    assert result == {"sent": True, "duration_ms": 800}
    assert decode(audio) == "1*0#"


async def test_bad_digits_are_refused_to_the_agent_and_nothing_plays(autojump_clock: Any) -> None:
    for bad in ("12x", 42, ""):
        result, audio = await play(bad)
        assert "error" in result and audio == b""
        json.dumps(result)  # a tool result the model can read
