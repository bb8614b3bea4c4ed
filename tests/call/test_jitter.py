"""Inbound ordering, de-duplication and gap filling."""

from __future__ import annotations

import random

from hypothesis import given, strategies as st

from twibridge.call.jitter import SILENCE, JitterBuffer


def frame(seq: int) -> bytes:
    return bytes([seq % 250]) * 160


def run(buf: JitterBuffer, seqs: list[int]) -> list[tuple[int, bytes]]:
    out = []
    for s in seqs:
        out += [(f.t_ms, f.payload) for f in buf.push(s, (s - 1) * 20, frame(s))]
    return out


def test_in_order_passes_straight_through() -> None:
    buf = JitterBuffer(60)
    assert run(buf, [1, 2, 3]) == [(0, frame(1)), (20, frame(2)), (40, frame(3))]
    assert buf.stats.reordered == buf.stats.duplicates == buf.stats.gaps_filled == 0


def test_shuffled_duplicated_and_missing_frames() -> None:
    buf = JitterBuffer(60)
    out = run(buf, [1, 2, 4, 3, 3, 5, 7, 8, 9, 10, 6, 11])
    assert [t for t, _ in out] == list(range(0, 220, 20))
    assert out[5] == (100, SILENCE * 160)  # frame 6 came too late: silence in its place
    assert [p for _, p in out][:5] == [frame(s) for s in (1, 2, 3, 4, 5)]
    s = buf.stats
    assert (s.reordered, s.duplicates, s.late_dropped, s.gaps_filled, s.gap_ms) == (1, 1, 1, 1, 20)


def test_timestamp_jump_is_filled_with_silence() -> None:
    buf = JitterBuffer(60)
    out = [(f.t_ms, f.payload) for f in buf.push(1, 1000, frame(1)) + buf.push(2, 1100, frame(2))]
    assert out == [(1000, frame(1)), (1020, SILENCE * 160), (1040, SILENCE * 160), (1060, SILENCE * 160),
                   (1080, SILENCE * 160), (1100, frame(2))]
    assert buf.stats.gap_ms == 80


def test_window_zero_never_holds() -> None:
    buf = JitterBuffer(0)
    out = run(buf, [1, 3, 2])
    assert [t for t, _ in out] == [0, 20, 40] and buf.stats.late_dropped == 1 and buf.depth == 0


@given(st.permutations(list(range(1, 41))), st.integers(0, 5))
def test_any_local_shuffle_keeps_the_clock_continuous(perm: list[int], seed: int) -> None:
    buf = JitterBuffer(60)
    out = run(buf, list(perm))
    times = [t for t, _ in out]
    assert times == list(range(times[0], times[0] + 20 * len(times), 20))  # continuous, ordered
    assert buf.depth <= 3


def test_bounded_held_frames() -> None:
    buf = JitterBuffer(60)
    rnd = random.Random(1)
    seqs = list(range(2, 500))
    rnd.shuffle(seqs)
    for s in [1] + seqs:
        buf.push(s, (s - 1) * 20, frame(s))
        assert buf.depth <= 3


# -- issue #23: gap-fill amplification ---------------------------------------------------------


def test_gap_fill_is_bounded_by_wall_time_and_big_jumps_are_discontinuities() -> None:
    """Each frame 10 s ahead of the last, arriving every 20 ms: no invented minutes of silence."""
    buf = JitterBuffer(60)
    released = 0
    for i in range(100):
        released += len(buf.push(i + 1, i * 10_000, frame(i + 1), now_ms=i * 20.0))
    elapsed_ms = 99 * 20
    assert buf.stats.gap_ms <= elapsed_ms + 60 + 20
    assert buf.stats.discontinuities == 99
    assert released * 20 <= elapsed_ms + 60 + 20 + 20  # every frame released, plus what wall time allowed
    assert buf.clock_ms - 0 <= elapsed_ms + 100  # the audio clock never runs ahead of the wall clock


def test_a_quiet_caller_skipped_by_twilio_is_still_filled_in_full() -> None:
    """Twilio skips silent frames: the jump matches the wall time that passed, so it is filled."""
    buf = JitterBuffer(60)
    buf.push(1, 0, frame(1), now_ms=1000.0)
    out = buf.push(2, 2020, frame(2), now_ms=3020.0)  # 2 s later in both clocks
    assert [f.t_ms for f in out][-1] == 2020 and len(out) == 101
    assert buf.stats.discontinuities == 0 and buf.stats.gap_ms == 2000
    # after a discontinuity the stream carries on from where it is, without a gap
    buf.push(3, 600_000, frame(3), now_ms=3040.0)
    assert buf.stats.discontinuities == 1
    nxt = buf.push(4, 600_020, frame(4), now_ms=3060.0)
    assert len(nxt) == 1 and buf.stats.discontinuities == 1
