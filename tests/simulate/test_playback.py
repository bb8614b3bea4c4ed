"""Twilio's playback-buffer rules, as emulated by the simulator (pure, no I/O)."""

from __future__ import annotations

import trio
import trio.testing

from twibridge.simulate.playback import ULAW_SILENCE, PlaybackBuffer, Played


def tone(ms: int, value: int = 0x10) -> bytes:
    """``ms`` of non-silent μ-law (8 bytes per ms)."""
    return bytes([value]) * (ms * 8)


def test_mark_sent_while_idle_is_echoed_at_once() -> None:
    buf = PlaybackBuffer()
    buf.enqueue_mark(100, "m0")
    assert buf.advance(100).marks == ("m0",)


def test_mark_echoes_only_after_prior_audio_has_played() -> None:
    buf = PlaybackBuffer()
    buf.enqueue_media(0, tone(100))
    buf.enqueue_mark(0, "a")
    buf.enqueue_media(0, tone(50))
    buf.enqueue_mark(0, "b")
    assert buf.advance(99.875).marks == ()
    assert buf.advance(100).marks == ("a",)
    assert buf.advance(149).marks == ()
    assert buf.advance(150).marks == ("b",)
    assert buf.pending_marks == 0


def test_playback_starts_when_audio_arrives_and_gaps_are_silence() -> None:
    buf = PlaybackBuffer()
    buf.advance(40)
    buf.enqueue_media(40, tone(20, 0x11))
    out = buf.advance(100)
    assert out.played == (Played(40.0, tone(20, 0x11)),)
    buf.enqueue_media(200, tone(10, 0x22))
    buf.advance(1000)
    heard = buf.heard_ulaw(300)
    assert len(heard) == 300 * 8
    assert heard[: 40 * 8] == bytes([ULAW_SILENCE]) * 320
    assert heard[40 * 8 : 60 * 8] == tone(20, 0x11)
    assert heard[60 * 8 : 200 * 8] == bytes([ULAW_SILENCE]) * (140 * 8)
    assert heard[200 * 8 : 210 * 8] == tone(10, 0x22)
    assert buf.played_intervals() == [(40.0, 60.0), (200.0, 210.0)]
    assert buf.played_ms == 30.0


def test_back_to_back_media_plays_contiguously_in_order() -> None:
    buf = PlaybackBuffer()
    buf.enqueue_media(0, tone(20, 1))
    buf.enqueue_media(5, tone(20, 2))  # arrives while the first is playing: queued behind it
    out = buf.advance(100)
    assert out.played == (Played(0.0, tone(20, 1) + tone(20, 2)),)
    assert buf.played_intervals() == [(0.0, 40.0)]


def test_clear_drops_unplayed_audio_and_echoes_pending_marks_at_once() -> None:
    buf = PlaybackBuffer()
    buf.enqueue_media(0, tone(100, 1))
    buf.enqueue_mark(0, "a")
    buf.enqueue_media(0, tone(100, 2))
    buf.enqueue_mark(0, "b")
    assert buf.advance(30).marks == ()
    dropped = buf.clear(30)
    assert dropped == 170.0
    assert buf.advance(30).marks == ("a", "b")
    assert buf.queued_ms == 0 and buf.pending_marks == 0
    buf.advance(500)
    assert buf.played_intervals() == [(0.0, 30.0)]
    assert buf.heard_ulaw() == tone(30, 1)


def test_marks_already_due_are_echoed_before_a_clear_drops_the_rest() -> None:
    buf = PlaybackBuffer()
    buf.enqueue_media(0, tone(20))
    buf.enqueue_mark(0, "played")
    buf.enqueue_media(0, tone(100))
    buf.enqueue_mark(0, "cancelled")
    buf.clear(50)
    assert buf.advance(50).marks == ("played", "cancelled")


def test_overflow_is_counted_not_buffered() -> None:
    buf = PlaybackBuffer(max_queued_ms=100, max_pending_marks=1)
    buf.enqueue_media(0, tone(80))
    buf.enqueue_media(0, tone(40))
    assert buf.queued_ms == 100 and buf.overflow_ms == 20
    buf.enqueue_mark(0, "a")
    buf.enqueue_mark(0, "b")
    assert buf.overflow_marks == 1


def test_time_going_backwards_is_harmless() -> None:
    buf = PlaybackBuffer()
    buf.enqueue_media(100, tone(20))
    buf.enqueue_mark(50, "m")  # stale timestamp: treated as "now" = 100
    assert buf.advance(119).marks == ()
    assert buf.advance(120).marks == ("m",)


async def test_mark_echo_times_under_a_fake_clock(autojump_clock: trio.testing.MockClock) -> None:
    """Drive the emulator the way the caller does (a 20 ms ticker plus
    messages at arbitrary times) and check *when* each mark comes back."""
    buf = PlaybackBuffer()
    t0 = trio.current_time()
    echoed: dict[str, float] = {}

    def now_ms() -> float:
        return (trio.current_time() - t0) * 1000

    def collect() -> None:
        for name in buf.advance(now_ms()).marks:
            echoed[name] = now_ms()

    async def ticker() -> None:
        for n in range(1, 100):
            await trio.sleep_until(t0 + n * 0.020)
            collect()

    async def bridge() -> None:
        await trio.sleep_until(t0 + 0.100)
        buf.enqueue_media(now_ms(), tone(300))
        buf.enqueue_mark(now_ms(), "reply-1")
        collect()
        await trio.sleep_until(t0 + 0.250)
        buf.enqueue_media(now_ms(), tone(1000))
        buf.enqueue_mark(now_ms(), "reply-2")
        await trio.sleep_until(t0 + 0.900)  # barge-in: clear while reply-2 plays
        buf.clear(now_ms())
        collect()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            nursery.start_soon(bridge)
    assert echoed["reply-1"] == 400.0  # 100 ms arrival + 300 ms of audio
    assert echoed["reply-2"] == 900.0  # cleared before its audio finished: echoed at the clear
    assert buf.played_intervals() == [(100.0, 900.0)]
