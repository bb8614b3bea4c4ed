"""Pacing, marks and heard position (pure; times are plain numbers)."""

from __future__ import annotations

from twibridge.call.playout import Playout


def test_pacing_keeps_at_most_the_lead_buffered() -> None:
    p = Playout(lead_ms=200)
    tp = p.new_turn(1, "a")
    now = 10.0
    sent_at = []
    for _ in range(20):
        now = max(now, p.send_at(now))  # the writer sleeps until send_at
        sent_at.append(round(now, 3))
        p.on_sent(tp, 100, now, -20.0)
        assert p.buffered_ms(now) <= 300  # lead + one chunk
    # after the initial lead, one 100 ms chunk every 100 ms: no drift
    gaps = [round(b - a, 3) for a, b in zip(sent_at[3:], sent_at[4:])]
    assert gaps == [0.1] * len(gaps)


def test_late_writer_catches_up_without_bursting() -> None:
    p = Playout(lead_ms=200)
    tp = p.new_turn(1, "a")
    p.on_sent(tp, 100, 0.0, -20.0)
    # writer stalled for 1 s: Twilio ran dry; the next chunk plays from now
    p.on_sent(tp, 100, 1.0, -20.0)
    assert p.play_end == 1.1


def test_marks_drive_played_ms_and_finished() -> None:
    p = Playout()
    tp = p.new_turn(1, "item")
    names = [p.on_sent(tp, 100, 0.0, -20.0) for _ in range(3)]
    assert names == ["g0:1:100", "g0:1:200", "g0:1:300"]
    tp.finished_sending = True
    p.on_mark(names[0], 0.1)
    assert tp.played_ms == 100 and not tp.fully_played
    p.on_mark(names[2], 0.3)
    assert tp.fully_played


def test_heard_position_is_clamped_to_sent() -> None:
    p = Playout()
    tp = p.new_turn(1, "item")
    assert tp.heard_ms(5.0) == 0  # nothing sent, nothing heard: truncate skipped
    p.on_sent(tp, 100, 0.0, -20.0)
    p.on_sent(tp, 100, 0.0, -20.0)
    p.on_mark("g0:1:100", 0.1)
    assert tp.heard_ms(0.15) == 150  # last mark + clock since
    assert tp.heard_ms(9.0) == 200  # never beyond what was sent


def test_clear_bumps_generation_and_stale_echoes_do_not_count() -> None:
    p = Playout()
    tp = p.new_turn(1, "item")
    n1 = p.on_sent(tp, 100, 0.0, -20.0)
    p.on_sent(tp, 100, 0.0, -20.0)
    assert p.clear(0.05) == 150
    echo = p.on_mark(n1, 0.06)  # echoed at once by Twilio's clear
    assert echo is not None and echo.stale and tp.played_ms == 0
    assert p.buffered_ms(0.06) == 0 and p.on_mark("foreign-mark", 0.1) is None


def test_agent_level_tracks_what_is_playing() -> None:
    p = Playout()
    tp = p.new_turn(1, "item")
    p.on_sent(tp, 100, 0.0, -12.0)
    assert p.agent_level(0.05) == -12.0
    assert p.agent_level(0.35) == -12.0  # echo tail
    assert p.agent_level(1.0) is None
