"""Debounced VAD, end of turn and echo gating, in audio time."""

from __future__ import annotations

from twibridge.audio.vad import SpeechEnded, SpeechStarted, TurnDetector, threshold_dbfs

LOUD, QUIET = -20.0, -70.0


def feed(det: TurnDetector, levels: list[float], agent: float | None = None, t0: int = 0) -> list:
    out = []
    for i, lv in enumerate(levels):
        ev = det.feed(lv, t0 + i * 20, agent)
        if ev is not None:
            out.append(ev)
    return out


def test_threshold_mapping() -> None:
    assert threshold_dbfs(0.5) == -35.0 and threshold_dbfs(0.3) == -45.0


def test_speech_longer_than_debounce_starts_and_ends_a_turn() -> None:
    det = TurnDetector(debounce_ms=300, end_of_turn_ms=500)
    evs = feed(det, [QUIET] * 5 + [LOUD] * 50 + [QUIET] * 30)
    assert evs == [SpeechStarted(start_ms=100, confirmed_ms=400), SpeechEnded(start_ms=100, end_ms=1100)]


def test_burst_shorter_than_debounce_is_ignored() -> None:
    det = TurnDetector(debounce_ms=300)
    assert feed(det, [QUIET] * 5 + [LOUD] * 10 + [QUIET] * 40 + [LOUD] * 14 + [QUIET] * 40) == []


def test_short_dips_inside_speech_do_not_reset() -> None:
    det = TurnDetector(debounce_ms=300)
    pattern = ([LOUD] * 5 + [QUIET] * 6) * 4  # 100 ms words, 120 ms pauses between them
    evs = feed(det, pattern)
    assert evs and isinstance(evs[0], SpeechStarted) and evs[0].start_ms == 0


def test_echo_of_the_agent_does_not_count() -> None:
    det = TurnDetector(debounce_ms=300, echo_margin_db=10)
    # agent plays at -15 dBFS; its echo comes back 12 dB down at -27 dBFS: gated
    assert feed(det, [-27.0] * 60, agent=-15.0) == []
    # the caller speaking over it (-20 dBFS, within 10 dB of the agent) counts
    evs = feed(det, [-20.0] * 20, agent=-15.0, t0=2000)
    assert evs == [SpeechStarted(start_ms=2000, confirmed_ms=2300)]


def test_quiet_line_threshold() -> None:
    quiet_speech = [-42.0] * 30
    assert feed(TurnDetector(vad_threshold=0.5), quiet_speech) == []
    assert feed(TurnDetector(vad_threshold=0.3), quiet_speech)
