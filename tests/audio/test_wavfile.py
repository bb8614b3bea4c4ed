"""Caller recordings → 8 kHz μ-law: every common WAV flavour, and every way a file is unusable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from twibridge.audio.g711 import ulaw_to_pcm16
from twibridge.audio.wavfile import AudioFileError, load_caller_audio, resample, write_pcm16_wav

FIXTURES = Path(__file__).parent.parent / "fixtures" / "audio"
FIXTURE_FILES = sorted(FIXTURES.glob("*.wav"))


def pcm(ulaw: bytes) -> np.ndarray:
    return np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64) / 32768


def test_fixtures_are_present() -> None:
    assert len(FIXTURE_FILES) == 5


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_every_fixture_converts_to_8k_ulaw(path: Path) -> None:
    info = sf.info(str(path))
    audio = load_caller_audio(path)
    assert audio.source_rate == info.samplerate and audio.source_channels == info.channels
    assert len(audio.ulaw) == info.frames * 8000 // info.samplerate
    assert abs(audio.duration_ms - info.duration * 1000) < 1
    assert np.abs(pcm(audio.ulaw)).max() > 0.01  # not silence


def test_ulaw_8k_input_passes_through_bit_exact() -> None:
    path = FIXTURES / "order_status_8k_mulaw.wav"
    decoded = sf.read(str(path), dtype="int16")[0]
    audio = load_caller_audio(path)
    assert ulaw_to_pcm16(audio.ulaw) == decoded.astype("<i2").tobytes()


def _tones(rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1000 * t + 1)


FORMATS = [
    (8000, "PCM_16", 1), (8000, "PCM_U8", 1), (8000, "ULAW", 1), (8000, "ALAW", 1),
    (11025, "PCM_16", 1), (16000, "PCM_24", 1), (22050, "PCM_32", 1), (24000, "FLOAT", 2),
    (32000, "DOUBLE", 1), (44100, "PCM_16", 2), (48000, "FLOAT", 1), (48000, "ALAW", 2),
]


@pytest.mark.parametrize(("rate", "subtype", "channels"), FORMATS, ids=lambda v: str(v))
def test_every_common_format_converts_faithfully(tmp_path: Path, rate: int, subtype: str, channels: int) -> None:
    path = tmp_path / "in.wav"
    x = _tones(rate)
    sf.write(str(path), np.stack([x] * channels, axis=1) if channels > 1 else x, rate, subtype=subtype)
    audio = load_caller_audio(path)
    got = pcm(audio.ulaw)
    want = _tones(8000)[: len(got)]
    assert len(got) == len(x) * 8000 // rate
    core = slice(200, -200)  # the filter's edges
    # μ-law (and 8-bit) quantisation limits the match; anything below 0.99 is a resampling bug.
    assert np.corrcoef(got[core], want[core])[0, 1] > 0.99
    assert np.sqrt(np.mean(got[core] ** 2)) == pytest.approx(np.sqrt(np.mean(want[core] ** 2)), rel=0.05)


def test_stereo_is_downmixed(tmp_path: Path) -> None:
    x = _tones(16000)
    path = tmp_path / "lr.wav"
    sf.write(str(path), np.stack([x, np.zeros_like(x)], axis=1), 16000, subtype="PCM_16")
    got = pcm(load_caller_audio(path).ulaw)[200:-200]
    want = 0.5 * _tones(8000)[200 : 200 + len(got)]
    assert np.sqrt(np.mean(got**2)) == pytest.approx(np.sqrt(np.mean(want**2)), rel=0.05)


def test_resampler_removes_what_8k_cannot_carry() -> None:
    t = np.arange(48000) / 48000
    out = resample(np.sin(2 * np.pi * 6000 * t), 48000, 8000)  # would alias to 2 kHz
    assert np.sqrt(np.mean(out[100:-100] ** 2)) < 0.001


def test_write_pcm16_wav_round_trips(tmp_path: Path) -> None:
    samples = (np.arange(800) - 400).astype("<i2")
    path = tmp_path / "out.wav"
    write_pcm16_wav(path, samples.tobytes())
    data, rate = sf.read(str(path), dtype="int16")
    assert rate == 8000 and sf.info(str(path)).subtype == "PCM_16" and sf.info(str(path)).channels == 1
    assert np.array_equal(data, samples)


def _bad(tmp_path: Path, name: str) -> Path:
    """Build one unusable file."""
    good = (FIXTURES / "hello_22k_pcm16.wav").read_bytes()
    path = tmp_path / f"{name}.wav"
    if name == "empty":
        path.write_bytes(b"")
    elif name == "text":
        path.write_text("this is not audio\n" * 20)
    elif name == "riff-only":
        path.write_bytes(good[:6])
    elif name == "truncated-header":
        path.write_bytes(good[:30])
    elif name == "truncated-data":
        path.write_bytes(good[: len(good) // 2])
    elif name == "96k":
        sf.write(str(path), np.zeros(960), 96000)
    elif name == "4k":
        sf.write(str(path), np.zeros(400), 4000)
    elif name == "no-samples":
        sf.write(str(path), np.zeros(0), 8000)
    elif name == "flac":
        sf.write(str(path), np.zeros(800), 8000, format="FLAC")
    elif name == "directory":
        path.mkdir()
    return path


BAD = {
    "empty": "empty file",
    "text": "not a WAV file",
    "riff-only": "truncated WAV header",
    "truncated-header": "truncated WAV header",
    "truncated-data": "truncated: data chunk declares",
    "96k": "unsupported sample rate 96000 Hz",
    "4k": "unsupported sample rate 4000 Hz",
    "no-samples": "no audio samples",
    "flac": "not a WAV file (it is FLAC)",
    "missing": "no such file",
    "directory": "is a directory",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_unusable_files_raise_with_a_reason(tmp_path: Path, name: str) -> None:
    path = _bad(tmp_path, name)
    with pytest.raises(AudioFileError) as info:
        load_caller_audio(path)
    assert info.value.reason.startswith(BAD[name])
    assert "\n" not in info.value.reason
