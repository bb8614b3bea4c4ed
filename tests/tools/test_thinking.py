"""twibridge.tools.thinking: after thinking_after_ms of tool work the sound starts; it stops when work ends."""

from __future__ import annotations

import pytest
import trio

from conftest import FIXTURES
from twibridge.audio.wavfile import AudioFileError
from twibridge.tools.thinking import ITEM_PREFIX, Thinking, load_sound


class Player:
    def __init__(self) -> None:
        self.log: list[tuple[float, str]] = []

    def start_filler(self, item_id: str, loop: bytes) -> None:
        assert item_id.startswith(ITEM_PREFIX) and loop
        self.log.append((trio.current_time(), "start"))

    async def stop_filler(self) -> None:
        self.log.append((trio.current_time(), "stop"))


async def test_quick_work_stays_silent_long_work_plays_until_done(autojump_clock: trio.testing.MockClock) -> None:
    player = Player()
    th = Thinking(b"\x00" * 160, 0.8, player)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(th.run)
        t0 = trio.current_time()
        th.begin()
        await trio.sleep(0.5)
        th.end()  # a quick lookup: nothing played
        await trio.sleep(2)
        assert player.log == []
        th.begin()
        await trio.sleep(0.3)
        th.begin()  # a second tool joins the busy spell: the clock keeps the first start
        await trio.sleep(0.6)
        th.end()
        await trio.sleep(1.0)
        th.end()
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    (t_start, a), (t_stop, b) = player.log
    assert (a, b) == ("start", "stop") and th.plays == 1
    assert t_start - t0 == pytest.approx(2.5 + 0.8) and t_stop - t0 == pytest.approx(2.5 + 1.9)


async def test_the_call_ending_stops_it(autojump_clock: trio.testing.MockClock) -> None:
    player = Player()
    th = Thinking(b"\x00" * 160, 0.1, player)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(th.run)
        th.begin()
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert [what for _, what in player.log] == ["start", "stop"]


def test_load_sound() -> None:
    ulaw = load_sound(str(FIXTURES / "audio" / "hello_22k_pcm16.wav"))
    assert ulaw and len(ulaw) % 160 == 0
    with pytest.raises(AudioFileError):
        load_sound("/nonexistent.wav")
