"""The report: caller VAD, turns, barge-ins, events — from synthetic call records (pure)."""

from __future__ import annotations

import io
import json
import math
import struct

from rich.console import Console

from twibridge.audio.g711 import pcm16_to_ulaw
from twibridge.simulate.caller import CallResult, Outcome
from twibridge.simulate.events import EventLog
from twibridge.simulate.report import REPORT_KEYS, Segment, build_report, render_report, speech_segments


def tone(ms: int, amp: float = 0.3) -> bytes:
    n = 8 * ms
    return pcm16_to_ulaw(struct.pack(f"<{n}h", *(int(amp * 32767 * math.sin(i * 0.3)) for i in range(n))))


def quiet(ms: int) -> bytes:
    return b"\xff" * (8 * ms)


def test_vad_finds_segments_and_ignores_blips_and_short_pauses() -> None:
    audio = quiet(200) + tone(600) + quiet(300) + tone(400) + quiet(800) + tone(100) + quiet(900) + tone(500)
    # 600 + (300 pause < 500 ms) + 400 is one segment; the 100 ms blip is no speech; the tail one counts.
    assert speech_segments(audio) == [Segment(200, 1500), Segment(3300, 3800)]


def test_vad_ignores_quiet_noise() -> None:
    assert speech_segments(tone(2000, amp=0.005)) == []


def record(caller: bytes, heard: bytes, played: list[tuple[float, float]], clears: list[float]) -> CallResult:
    log = EventLog()
    log.add(0, "to_server", "start")
    for t in clears:
        log.add(t, "from_server", "clear", dropped_ms=100)
    return CallResult(
        call_sid="CA" + "1" * 32, account_sid="AC" + "2" * 32, stream_sid="MZ" + "3" * 32, caller_ulaw=caller,
        outcome=Outcome.COMPLETED, detail="done", frames_sent=len(caller) // 160, call_ms=len(caller) / 8,
        clears=clears, heard_ulaw=heard, played_intervals=played, events=log.as_list(),
    )


def test_turns_and_barge_ins() -> None:
    # caller: speech 0-1000, speech 3000-4000 (interrupting the reply), silence to 6000
    caller = tone(1000) + quiet(2000) + tone(1000) + quiet(2000)
    # heard: a 100 ms quiet lead-in at 1500, reply audible 1600-3400 (cleared), reply 2 at 4700-5500
    heard = quiet(1500) + tone(100, amp=0.001) + tone(1800) + quiet(1300) + tone(800) + quiet(500)
    rep = build_report(record(caller, heard, [(1500.0, 3400.0), (4700.0, 5500.0)], clears=[3250.0]))
    assert tuple(rep) == REPORT_KEYS
    assert rep["turns"] == [
        {"caller_start_ms": 0, "caller_end_ms": 1000, "reply_start_ms": 1600, "reply_latency_ms": 600},
        {"caller_start_ms": 3000, "caller_end_ms": 4000, "reply_start_ms": 4700, "reply_latency_ms": 700},
    ]
    assert rep["barge_ins"] == [{"caller_start_ms": 3000, "clear_ms": 3250, "latency_ms": 250}]
    assert rep["audio_received_ms"] == 2700 and rep["clears"] == 1 and rep["audio_sent_ms"] == 6000
    assert rep["events"][-1] == {"t_ms": 6000.0, "dir": "to_server", "event": "end", "outcome": "completed",
                                 "detail": "done"}
    json.dumps(rep)  # JSON-ready


def test_a_reply_still_playing_when_the_caller_stops_is_not_their_answer() -> None:
    caller = tone(1000) + quiet(3000)
    heard = quiet(500) + tone(1500) + quiet(2000)  # started before the caller finished
    rep = build_report(record(caller, heard, [(500.0, 2000.0)], clears=[]))
    assert rep["turns"][0]["reply_start_ms"] is None and rep["turns"][0]["reply_latency_ms"] is None


def test_barge_in_without_a_clear_is_reported_as_such() -> None:
    caller = quiet(1000) + tone(800) + quiet(1200)
    heard = tone(2500) + quiet(500)
    rep = build_report(record(caller, heard, [(0.0, 2500.0)], clears=[]))
    assert rep["barge_ins"] == [{"caller_start_ms": 1000, "clear_ms": None, "latency_ms": None}]


def test_tables_render() -> None:
    caller = tone(1000) + quiet(2000)
    heard = quiet(1500) + tone(1000) + quiet(500)
    result = record(caller, heard, [(1500.0, 2500.0)], clears=[])
    out = io.StringIO()
    render_report(Console(file=out, width=120), build_report(result), result)
    text = out.getvalue()
    for needle in ("Call CA111", "caller", "agent", "Latency", "turn 1", "500", "completed: done"):
        assert needle in text
