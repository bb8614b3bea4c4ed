"""The recording: the mixer's timeline (pure), real calls against what was sent and heard, pause, disk full."""

from __future__ import annotations

import os
import stat
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

from fakes import silence, tone
from support import ACCOUNT_SID, TOKEN, bridge, make_config
from twibridge.audio.g711 import ulaw_to_pcm16
from twibridge.records.recording import Mixer, recording_path, sweep
from twibridge.simulate import CallOptions, simulate_call

S = b"\xff"
#: The agent is placed by the bridge's playout clock; the phone hears it one network transit later
#: (and the stream's clock is estimated over one transit in): on a busy loopback, tens of ms.
TRANSIT_SAMPLES = 80 * 8


@pytest.fixture
def fast_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(rate=4)


def test_mixer_places_fills_cuts_and_pauses() -> None:
    m = Mixer()
    m.caller(0, b"\x01" * 160)
    m.caller(40, b"\x03" * 160)  # the frame at 20 ms never came: silence
    m.agent(10.0, b"\x10" * 400)  # 10..60 ms
    m.clear(30.0)  # Twilio dropped what had not played by 30 ms
    left, right = m.take(50)
    assert left == b"\x01" * 160 + S * 160 + b"\x03" * 80
    assert right == S * 80 + b"\x10" * 160 + S * 160
    m.caller(20, b"\x02" * 160)  # too late: already written
    assert m.late_samples == 160
    m.pause(60)
    m.agent(55.0, b"\x20" * 160)  # 55..75 ms: the part after 60 is silenced
    m.resume(70)
    left, right = m.take()
    assert len(left) == len(right) == 200  # 50..75 ms
    assert right == S * 40 + b"\x20" * 40 + S * 80 + b"\x20" * 40
    assert left == b"\x03" * 80 + S * 120


def test_path_and_sweep(tmp_path: Path) -> None:
    p = recording_path(tmp_path, "CA/1", 1_700_000_000)
    assert p == tmp_path / "2023-11-14" / "CA1.wav"
    p.parent.mkdir()
    p.write_bytes(b"x")
    old = time.time() - 31 * 86400
    os.utime(p, (old, old))
    assert sweep(tmp_path, 30) == 1 and not p.parent.exists()
    assert sweep(tmp_path, 0) == 0


def read_wav(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data[0::2].astype(float), data[1::2].astype(float)


def pcm(ulaw: bytes) -> np.ndarray:
    return np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(float)


def best_match(a: np.ndarray, b: np.ndarray, max_lag: int = 800) -> tuple[float, int]:
    """The highest normalised correlation of ``a`` against ``b`` shifted by up to ±``max_lag`` samples."""
    best = (0.0, 0)
    n = min(len(a), len(b)) - max_lag
    for lag in range(-max_lag, max_lag + 1, 8):
        x = a[max_lag:max_lag + n - max_lag]
        y = b[max_lag + lag:max_lag + lag + n - max_lag]
        denom = np.sqrt(np.dot(x, x) * np.dot(y, y)) or 1.0
        c = float(np.dot(x, y) / denom)
        if c > best[0]:
            best = (c, lag)
    return best


async def one_call(tmp_path: Path, caller: bytes, **opts: Any) -> tuple[Any, dict[str, Any]]:
    cfg = make_config(recording={"enabled": True, "dir": str(tmp_path)})
    async with bridge(cfg) as (server, rt):
        result = await simulate_call(server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5, **opts))
        while rt.calls:
            await rt.calls_changed.wait()
        (summary,) = await rt.registry.recent(1)
    return result, summary["report"]


async def test_channels_are_what_was_sent_and_what_was_heard(tmp_path: Path, captured_logs: Any) -> None:
    # The echo agent repeats the utterance; the caller talks over the echo (a barge-in, then a clear).
    caller = silence(300) + tone(1500) + silence(1200) + tone(900, freq=300) + silence(2500)
    with trio.fail_after(40):
        result, report = await one_call(tmp_path, caller)
    assert result.ok and result.clears, "no barge-in happened"
    path = Path(report["recording"])
    assert path.parent.parent == tmp_path and path.name == f"{result.call_sid}.wav"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    left, right = read_wav(path)
    # Left: the caller as sent, sample for sample, from the start.
    sent = pcm(result.caller_ulaw)
    n = min(len(sent), len(left))
    assert n > 0.9 * len(sent) and np.array_equal(left[:n], sent[:n])
    # Right: what the phone played (its own playback emulation), cut at the clear, in its place in time.
    heard = pcm(result.heard_ulaw)
    corr, lag = best_match(heard, right[:len(heard)])
    assert corr > 0.9 and abs(lag) <= TRANSIT_SAMPLES, (corr, lag)
    clear_at = int(result.clears[0] * 8)
    loud_after_clear = np.abs(right[clear_at + 400:clear_at + 4000]).max()  # 50..500 ms after the clear
    assert loud_after_clear < 500 <= np.abs(right[:clear_at]).max()
    assert not captured_logs.events("recording.stopped")


async def test_dtmf_pauses_and_resumes_both_channels(tmp_path: Path, fast_clock: trio.testing.MockClock) -> None:
    caller = silence(200) + tone(3000) + silence(1000)
    dtmf = [(0.8, "*"), (0.9, "9"), (2.0, "*"), (2.1, "9")]
    with trio.fail_after(40):
        result, report = await one_call(tmp_path, caller, dtmf=dtmf)
    (span,) = report["recording_pauses"]
    assert 750 <= span["from_ms"] <= 1100 and 1900 <= span["to_ms"] <= 2300, span  # "9" at 0.9 s and 2.1 s
    left, _right = read_wav(Path(report["recording"]))
    # (the report's times are the bridge's, the file's the stream's: ~ the start's transit apart)
    lo, hi = span["from_ms"] * 8, span["to_ms"] * 8
    assert np.abs(left[lo + 800:hi - 800]).max() == 0  # the tone was playing: silenced
    assert np.abs(left[lo - 2400:lo - 800]).max() > 1000 and np.abs(left[hi + 800:hi + 2400]).max() > 1000


async def test_disk_full_stops_the_recording_not_the_call(tmp_path: Path, captured_logs: Any,
                                                          fast_clock: trio.testing.MockClock,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    # Every recording of today lands on /dev/full (writes fail with ENOSPC).
    cfg = make_config(recording={"enabled": True, "dir": str(tmp_path)})
    caller = silence(300) + tone(600) + silence(1500)
    with trio.fail_after(40):
        async with bridge(cfg) as (server, rt):
            import twibridge.simulate.caller as sim

            sid = "CA" + "f" * 32
            monkeypatch.setattr(sim, "new_sid", lambda prefix: sid if prefix == "CA" else "MZ" + "e" * 32)
            target = recording_path(tmp_path, sid, time.time())
            target.parent.mkdir(parents=True)
            target.symlink_to("/dev/full")
            result = await simulate_call(server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
            while rt.calls:
                await rt.calls_changed.wait()
    assert result.ok and result.heard_ulaw.strip(b"\xff")  # the call went on: the echo was heard
    (warning,) = captured_logs.events("recording.stopped")
    assert warning["error"] == "No space left on device" and warning["level"] == "warning"


async def test_the_file_is_valid_while_the_call_goes_on(tmp_path: Path) -> None:
    """What a crash would leave: a WAV whose header matches the audio appended so far."""
    from twibridge.config.records import RecordingConfig
    from twibridge.records.recording import Recording

    rec = Recording(RecordingConfig(enabled=True, dir=str(tmp_path)), "CA1", trio.current_time(), time.time())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rec.run)
        t0 = trio.current_time()
        for k in range(150):  # 3 s of caller frames, in real time
            await trio.sleep_until(t0 + k * 0.02)
            rec.caller(k * 20, b"\x01" * 160)
        await trio.sleep(1.1)  # one more flush
        size = rec.path.stat().st_size
        with wave.open(str(rec.path)) as w:
            frames = w.getnframes()
        assert frames >= 2 * 8000 and size == 44 + frames * 4  # everything but the last ~second, consistent
        nursery.cancel_scope.cancel()
    with wave.open(str(rec.path)) as w:
        assert w.getnframes() >= 3 * 8000  # the rest, written on the way out


async def test_announce_is_said_before_the_stream(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    from support import post_signed

    cfg = make_config(recording={"enabled": True, "dir": str(tmp_path), "announce": "This call is recorded."})
    async with bridge(cfg) as (url, _rt):
        resp = await post_signed(url, "/voice", {"CallSid": "CA" + "1" * 32, "AccountSid": ACCOUNT_SID, "From": "+15550001", "To": "+1555002"})
    root = ET.fromstring(resp.text)
    assert [c.tag for c in root] == ["Say", "Connect", "Hangup"] and root[0].text == "This call is recorded."


async def test_the_built_in_tools_pause_and_resume(tmp_path: Path, fast_clock: trio.testing.MockClock) -> None:
    """What the tools executor calls for ``pause_recording`` / ``resume_recording``."""
    cfg = make_config(recording={"enabled": True, "dir": str(tmp_path)})
    caller = silence(200) + tone(3000) + silence(800)
    with trio.fail_after(40):
        async with bridge(cfg) as (server, rt), trio.open_nursery() as nursery:
            nursery.start_soon(simulate_call, server, TOKEN, caller, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.3))
            while not rt.calls:
                await rt.calls_changed.wait()
            (call,) = rt.calls.values()
            await trio.sleep(1.0)
            assert await call.pause_recording() == {"ok": True, "status": "paused"}
            assert await call.pause_recording() == {"ok": True, "status": "already paused"}
            await trio.sleep(1.0)
            assert await call.resume_recording() == {"ok": True, "status": "recording"}
            while rt.calls:
                await rt.calls_changed.wait()
            (summary,) = await rt.registry.recent(1)
    (span,) = summary["report"]["recording_pauses"]
    assert 900 <= span["to_ms"] - span["from_ms"] <= 1300
    left, right = read_wav(Path(summary["report"]["recording"]))
    lo, hi = span["from_ms"] * 8, span["to_ms"] * 8
    assert np.abs(left[lo + 800:hi - 800]).max() == 0 and np.abs(right[lo + 800:hi - 800]).max() == 0
    assert np.abs(left[lo - 2400:lo - 800]).max() > 1000
