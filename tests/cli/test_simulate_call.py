"""simulate-call against the real bridge (echo agent): in-process, via the CLI, and --server mode.

The echo agent repeats each caller utterance, so what the caller *heard*
must sound like what it said: checked by normalised cross-correlation, not
by length.  Most calls run on a fast clock (``--speed`` / a MockClock with
``rate``) to keep the suite quick; one runs in real time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import trio
import trio.testing
from typer.testing import CliRunner

from support import ACCOUNT_SID, TOKEN, bridge
from twibridge.audio.g711 import ulaw_dbfs, ulaw_to_pcm16
from twibridge.cli import app
from twibridge.simulate import CallOptions, build_report, load_caller_audio, simulate_call
from twibridge.simulate.report import REPLY_AUDIBLE_DBFS, REPORT_KEYS

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent.parent / "fixtures" / "audio"
FIXTURE_FILES = sorted(FIXTURES.glob("*.wav"))
HELLO = FIXTURES / "hello_22k_pcm16.wav"


@pytest.fixture
def fast_clock() -> trio.testing.MockClock:
    """Trio time 8× real time: the bridge and the caller both run on it."""
    return trio.testing.MockClock(rate=8)


def pcm(ulaw: bytes) -> np.ndarray:
    return np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)


def best_correlation(needle: np.ndarray, haystack: np.ndarray) -> float:
    """Max normalised cross-correlation of ``needle`` over every offset in ``haystack``."""
    needle = needle - needle.mean()
    dots = np.correlate(haystack, needle, mode="valid")
    energy = np.convolve(haystack**2, np.ones(len(needle)), mode="valid")
    sums = np.convolve(haystack, np.ones(len(needle)), mode="valid")
    var = np.maximum(energy - sums**2 / len(needle), 1e-9)  # the window's own mean removed
    return float(np.max(dots / np.sqrt(var * np.sum(needle**2))))


def silence(ms: int) -> bytes:
    return b"\xff" * (8 * ms)


def two_utterances() -> tuple[bytes, list[tuple[int, int]]]:
    """Two different utterances 2.5 s apart, and where each is (ms)."""
    first = load_caller_audio(FIXTURES / "two_turns_44k_stereo.wav").ulaw[8 * 300 : 8 * 2700]
    second = load_caller_audio(HELLO).ulaw
    audio = silence(300) + first + silence(2500) + second
    return audio, [(300, 300 + len(first) // 8), (5200, 5200 + len(second) // 8)]


async def test_two_utterances_get_two_replies_that_sound_like_them(fast_clock: trio.testing.MockClock) -> None:
    audio, spans = two_utterances()
    with trio.fail_after(60):  # virtual seconds: ~10 s of call
        async with bridge() as (url, _):
            result = await simulate_call(url, TOKEN, audio, CallOptions(account_sid=ACCOUNT_SID, tail_s=3.0))
    report = build_report(result)
    assert result.ok, (result.detail, result.protocol_errors)
    assert len(report["turns"]) == 2 and report["barge_ins"] == []
    heard = pcm(result.heard_ulaw)
    scores = []
    for turn in report["turns"]:
        assert turn["reply_start_ms"] is not None and 0 < turn["reply_latency_ms"] < 1500
        start = turn["reply_start_ms"] * 8
        row = []
        for begin, end in spans:
            said = pcm(audio[begin * 8 : end * 8])
            window = heard[max(0, start - 2400) : start + len(said) + 2400]
            row.append(best_correlation(said, window) if len(window) >= len(said) else 0.0)
        scores.append(row)
    # Each reply is its own utterance played back, and clearly not the other one.
    assert scores[0][0] > 0.8 and scores[1][1] > 0.8, scores
    assert scores[0][1] < scores[0][0] - 0.2 and scores[1][0] < scores[1][1] - 0.2, scores


async def test_a_short_call_in_real_time() -> None:
    audio = load_caller_audio(HELLO).ulaw
    with trio.fail_after(15):
        async with bridge() as (url, _):
            result = await simulate_call(url, TOKEN, audio, CallOptions(account_sid=ACCOUNT_SID, tail_s=1.5))
    report = build_report(result)
    assert result.ok, (result.detail, result.protocol_errors)
    assert report["audio_sent_ms"] == 2480 and report["frames_sent"] == 124
    assert len(report["turns"]) == 1 and report["turns"][0]["reply_start_ms"] is not None
    assert report["marks_echoed"] == report["marks_received"] > 0


# --------------------------------------------------------------------------
# The CLI, in-process
# --------------------------------------------------------------------------


def run_cli(*args: str) -> Any:
    result = CliRunner().invoke(app, ["simulate-call", *args], catch_exceptions=False)
    return result


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_every_fixture_through_the_cli(tmp_path: Path, path: Path) -> None:
    out, rep = tmp_path / "reply.wav", tmp_path / "report.json"
    res = run_cli(str(path), "--speed", "8", "--tail", "2", "--quiet", "--out", str(out), "--report", str(rep))
    assert res.exit_code == 0, res.output
    report = json.loads(rep.read_text())
    assert tuple(report) == REPORT_KEYS
    assert report["protocol_errors"] == [] and report["frames_sent"] * 20 == report["audio_sent_ms"]
    assert report["agent_providers"] == ["echo"]  # in-process: the bridge says who served the call
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    heard, _ = sf.read(str(out), dtype="int16")
    assert len(heard) == report["audio_sent_ms"] * 8  # reply.wav is the call's timeline
    if "noise" in path.name:
        assert report["turns"] == []  # background noise is no caller turn
        return
    assert len(report["turns"]) >= 1
    # The report's reply times land where reply.wav has the reply.
    heard_ulaw = load_caller_audio(out).ulaw
    turns = report["turns"]
    for turn, nxt in zip(turns, [*(t["caller_start_ms"] for t in turns[1:]), None]):
        at = turn["reply_start_ms"]
        if at is None:
            # Only a caller who spoke again before the echo could answer (it waits
            # ~500 ms of quiet; at --speed 8 a busy machine stretches that) goes
            # without a reply: the reply then belongs to no turn, it was barged in on.
            assert nxt is not None and nxt - turn["caller_end_ms"] < 1500, turn
            continue
        assert ulaw_dbfs(heard_ulaw[at * 8 : at * 8 + 160]) > REPLY_AUDIBLE_DBFS
        assert at >= turn["caller_end_ms"]
        assert ulaw_dbfs(heard_ulaw[at * 8 - 160 : at * 8]) <= REPLY_AUDIBLE_DBFS  # it starts right there
    media = sum(e["audio_ms"] for e in report["events"] if e["event"] == "media" and e["dir"] == "from_server")
    assert 0 < report["audio_received_ms"] <= media


def test_dtmf_and_the_terminal_tables(tmp_path: Path) -> None:
    rep = tmp_path / "report.json"
    res = run_cli(str(HELLO), "--speed", "8", "--tail", "1.5", "--dtmf", "1@0.5,#@1.2", "--report", str(rep))
    assert res.exit_code == 0, res.output
    digits = [(e["t_ms"], e["digit"]) for e in json.loads(rep.read_text())["events"] if e["event"] == "dtmf"]
    assert digits == [(500.0, "1"), (1200.0, "#")]
    for text in ("Latency", "turn 1", "DTMF #", "audio sent", "completed"):
        assert text in res.output


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [("empty.wav", b"", "empty file"), ("notes.wav", b"just some text, not audio\n" * 8, "not a WAV file"),
     ("cut.wav", HELLO.read_bytes()[:30], "truncated WAV header")],
)
def test_unreadable_files_exit_2_with_one_line(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    res = run_cli(str(path))
    assert res.exit_code == 2
    assert res.stdout == ""
    assert res.stderr.splitlines() == [f"cannot read {path}: {reason}" + res.stderr.split(reason, 1)[1].rstrip("\n")]
    assert res.stderr.startswith(f"cannot read {path}: {reason}") and "Traceback" not in res.stderr


def test_96k_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "hifi.wav"
    sf.write(str(path), np.zeros(9600), 96000)
    res = run_cli(str(path))
    assert res.exit_code == 2
    assert res.stderr == f"cannot read {path}: unsupported sample rate 96000 Hz (need 8000-48000 Hz)\n"


@pytest.mark.parametrize("spec", ["1", "x@2", "1@soon", "12@1", "1@-1"])
def test_bad_dtmf_exits_2(spec: str) -> None:
    res = run_cli(str(HELLO), "--dtmf", spec)
    assert res.exit_code == 2 and res.stderr.startswith("bad --dtmf: ")


def test_dtmf_after_the_call_exits_2() -> None:
    res = run_cli(str(HELLO), "--dtmf", "5@30", "--tail", "1")
    assert res.exit_code == 2 and "after the call ends" in res.stderr


def test_bad_config_exits_2_one_problem_per_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[server]\nport = "eighty"\n[agent]\nprovider = "nope"\n')
    res = run_cli(str(HELLO), "--config", str(cfg))
    assert res.exit_code == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{cfg}: ") for line in lines)
    assert any("server.port" in line for line in lines) and any("agent.provider" in line for line in lines)


# --------------------------------------------------------------------------
# --server mode against a `twibridge serve` subprocess, signatures on
# --------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TWIBRIDGE_")}


async def test_server_mode_against_twibridge_serve(tmp_path: Path) -> None:
    cfg = tmp_path / "twibridge.toml"
    cfg.write_text(f'[twilio]\nauth_token = "{TOKEN}"\nvalidate_signatures = true\n[log]\nformat = "json"\n')
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[twilio]\nauth_token = "not-the-server-token"\n')
    cmd = [sys.executable, "-m", "twibridge"]
    with trio.fail_after(40):
        proc = await trio.lowlevel.open_process([*cmd, "serve", "--config", str(cfg), "--port", "0"], cwd=ROOT,
                                                env=_env(), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        listening = trio.Event()
        url = ""
        logs = bytearray()

        async def read_logs() -> None:
            """Drain the server's stderr (a full pipe would stall it); spot its URL."""
            nonlocal url
            assert proc.stderr is not None
            async for chunk in proc.stderr:
                logs.extend(chunk)
                if not url and b"\n" in logs and b'"server.listening"' in logs:
                    line = next(ln for ln in bytes(logs).splitlines() if b'"server.listening"' in ln)
                    url = json.loads(line)["url"]
                    listening.set()
            listening.set()  # EOF: the server died; fail fast below

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_logs)
                await listening.wait()
                assert url, logs.decode(errors="replace")[-2000:]
                rep = tmp_path / "report.json"
                ok = await trio.run_process(
                    [*cmd, "simulate-call", str(HELLO), "--server", url, "--config", str(cfg), "--tail", "1",
                     "--quiet", "--report", str(rep)], cwd=ROOT, env=_env(), capture_stdout=True,
                    capture_stderr=True, check=False)
                refused = await trio.run_process(
                    [*cmd, "simulate-call", str(HELLO), "--server", url, "--config", str(wrong), "--quiet"],
                    cwd=ROOT, env=_env(), capture_stdout=True, capture_stderr=True, check=False)
                proc.send_signal(signal.SIGTERM)
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            assert proc.stderr is not None
            await proc.stderr.aclose()
    assert ok.returncode == 0, ok.stderr.decode()
    report = json.loads(rep.read_text())
    assert report["protocol_errors"] == [] and len(report["turns"]) == 1
    assert report["turns"][0]["reply_start_ms"] is not None
    assert refused.returncode == 1
    assert b"refused: 11200: POST" in refused.stderr and b"HTTP 403" in refused.stderr
    assert proc.returncode == 0  # it drained and exited cleanly on SIGTERM
