"""twibridge.call.idle: when a check-in is due, on trio's autojump clock (no sleeping)."""

from __future__ import annotations

from typing import Any

import trio

from twibridge.call.idle import IdleWatch


class Script:
    """Records what the watch asked for, and when."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, float]] = []
        self.heard_until_value: float = float("-inf")

    def heard_until(self, now: float) -> float:
        return self.heard_until_value

    async def check_in(self, text: str) -> None:
        self.asked.append(("check-in", trio.current_time()))

    async def goodbye(self, text: str) -> None:
        self.asked.append(("goodbye", trio.current_time()))


async def test_check_ins_then_goodbye_at_each_quiet_period(autojump_clock: Any) -> None:
    start = trio.current_time()
    watch, s = IdleWatch(8.0, 2), Script()
    with trio.fail_after(100):
        await watch.run(s.heard_until, s.check_in, s.goodbye)
    assert [(k, round(t - start, 3)) for k, t in s.asked] == [("check-in", 8.0), ("check-in", 16.0),
                                                              ("goodbye", 24.0)]


async def test_speech_moves_the_next_check_in(autojump_clock: Any) -> None:
    start = trio.current_time()
    watch, s = IdleWatch(8.0, 1), Script()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run, s.heard_until, s.check_in, s.goodbye)
        await trio.sleep(5)
        watch.touch(trio.current_time())  # the caller spoke at 5 s
        await trio.sleep(7.9)
        assert s.asked == []
        await trio.sleep(0.2)
        assert [round(t - start, 3) for _, t in s.asked] == [13.0]
        nursery.cancel_scope.cancel()


async def test_audio_still_playing_delays_the_check_in_to_its_end(autojump_clock: Any) -> None:
    start = trio.current_time()
    watch, s = IdleWatch(8.0, 1), Script()
    s.heard_until_value = start + 11.0  # the agent's reply plays until 11 s (sent long before)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run, s.heard_until, s.check_in, s.goodbye)
        await trio.sleep(18.9)
        assert s.asked == []
        await trio.sleep(0.2)
        assert [round(t - start, 3) for _, t in s.asked] == [19.0]
        nursery.cancel_scope.cancel()


async def test_zero_disables(autojump_clock: Any) -> None:
    watch, s = IdleWatch(0.0, 2), Script()
    with trio.move_on_after(3600):
        await watch.run(s.heard_until, s.check_in, s.goodbye)
    assert s.asked == [] and not watch.enabled


async def test_no_prompts_means_goodbye_after_the_first_quiet_period(autojump_clock: Any) -> None:
    start = trio.current_time()
    watch, s = IdleWatch(5.0, 0), Script()
    await watch.run(s.heard_until, s.check_in, s.goodbye)
    assert [(k, round(t - start, 3)) for k, t in s.asked] == [("goodbye", 5.0)]
