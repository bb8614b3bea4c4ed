"""The speaker's filler hook (the thinking sound): looped like a reply, stopped by a result, a reply or a barge-in."""

from __future__ import annotations

import base64
import json

import trio

from twibridge.agents.base import AudioOut, ReplyDone
from twibridge.call.replies import LoopedReply
from twibridge.call.speaker import Speaker
from twibridge.config import TurnsConfig

LOOP = bytes(range(0, 240, 3)) * 4  # 320 bytes: 40 ms, distinguishable from the agent's b"\x10"


class Wire:
    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []

    async def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def kinds(self) -> list[str]:
        return [str(m["event"]) for m in self.sent]

    def audio(self) -> bytes:
        return b"".join(base64.b64decode(str(m["media"]["payload"])) for m in self.sent  # type: ignore[index]
                        if m["event"] == "media")


def speaker(wire: Wire) -> Speaker:
    sp = Speaker(TurnsConfig(), wire.send, trio.Lock())
    sp.stream_sid = "MZ1"
    return sp


async def test_looped_reply_never_runs_dry() -> None:
    buf = LoopedReply("t", b"abc")
    assert buf.take(7) == b"abcabca" and buf.take(2) == b"bc" and buf.available > 10**6 and not buf.finished


async def test_filler_loops_until_stopped_then_clear(autojump_clock: trio.testing.MockClock) -> None:
    wire = Wire()
    sp = speaker(wire)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sp.run)
        sp.caller_end_at = trio.current_time()
        sp.start_filler("twibridge-thinking-1", LOOP)
        await trio.sleep(1.0)
        assert sp.speaking(trio.current_time())
        await sp.stop_filler()
        n = len(wire.sent)
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert wire.kinds()[-1] == "clear" and len(wire.sent) == n  # nothing after the clear
    heard = wire.audio()
    assert len(heard) > 2 * len(LOOP) and heard[: 3 * len(LOOP)] == LOOP * 3  # looped, seamless
    marks = [m["mark"]["name"] for m in wire.sent if m["event"] == "mark"]  # type: ignore[index]
    assert marks and all(name.split(":")[1] for name in marks)
    assert sp.stats.reply_latency_ms == []  # the thinking sound is no reply
    assert sp.playout.turns[1].item_id == ""  # its turn names no agent item


async def test_the_agents_reply_preempts_it_without_clear(autojump_clock: trio.testing.MockClock) -> None:
    wire = Wire()
    sp = speaker(wire)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sp.run)
        sp.start_filler("twibridge-thinking-1", LOOP)
        await trio.sleep(0.5)
        sp.on_audio(AudioOut("r1", b"\x10" * 800))
        sp.on_reply_done(ReplyDone("r1"))
        await trio.sleep(1.0)
        await sp.stop_filler()  # the result arrives after: no clear may cut the agent's reply
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert "clear" not in wire.kinds()
    assert wire.audio().endswith(b"\x10" * 800)


async def test_a_barge_in_stops_it_and_names_no_item(autojump_clock: trio.testing.MockClock) -> None:
    wire = Wire()
    sp = speaker(wire)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sp.run)
        sp.start_filler("twibridge-thinking-1", LOOP)
        await trio.sleep(0.5)
        cut = await sp.barge_in("local-vad", trio.current_time())
        n = len(wire.sent)
        await sp.stop_filler()  # the thinking task's own stop afterwards: a no-op
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert cut is not None and cut.item_id == "" and cut.sent_ms > 0
    assert wire.kinds().count("clear") == 1 and len(wire.sent) == n
