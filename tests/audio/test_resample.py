"""Resamplers (half-band 8/16 kHz, low-pass 24 -> 8 kHz): exact fixed-point results, frequency behaviour, streaming."""

from __future__ import annotations

import cmath
import math
import random
import struct
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twibridge.audio.resample import (
    FRACTION_BITS,
    GROUP_DELAY_16K,
    GROUP_DELAY_24K,
    HALFBAND_TAPS,
    LOWPASS_24K_TAPS,
    Downsampler16kTo8k,
    Downsampler24kTo8k,
    Upsampler8kTo16k,
    downsample_16k_to_8k,
    downsample_24k_to_8k,
    upsample_8k_to_16k,
)

ONE = 1 << FRACTION_BITS


def pcm16(values: list[int]) -> bytes:
    return struct.pack(f"<{len(values)}h", *values)


def samples(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def tone(freq: float, rate: int, n: int, amp: float) -> list[int]:
    return [round(amp * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)]


def rms(values: list[int]) -> float:
    return math.sqrt(sum(v * v for v in values) / len(values))


def fit_sine(values: list[int], freq: float, rate: int) -> tuple[float, float]:
    """Amplitude of the ``freq`` component and RMS of what is left.

    ``values`` must span whole periods, so correlating with sin/cos is a
    least-squares fit.
    """
    n = len(values)
    w = 2 * math.pi * freq / rate
    a = 2 / n * sum(v * math.sin(w * i) for i, v in enumerate(values))
    b = 2 / n * sum(v * math.cos(w * i) for i, v in enumerate(values))
    residual = [v - a * math.sin(w * i) - b * math.cos(w * i) for i, v in enumerate(values)]
    return math.hypot(a, b), math.sqrt(sum(r * r for r in residual) / n)


def db(ratio: float) -> float:
    return 20 * math.log10(ratio)


# --------------------------------------------------------------------------
# Straightforward fixed-point reference: zero-stuff/filter/decimate, sample by sample.


def saturate(v: int) -> int:
    return max(-32768, min(32767, v))


def reference_up(x: list[int]) -> list[int]:
    stuffed = [v for s in x for v in (s, 0)]
    out = []
    for m in range(len(stuffed)):
        acc = sum(2 * h * stuffed[m - j] for j, h in enumerate(HALFBAND_TAPS) if h and m >= j)
        out.append(saturate((acc + ONE // 2) >> FRACTION_BITS))
    return out


def reference_down(x: list[int]) -> list[int]:
    out = []
    for t in range(len(x) // 2):
        acc = sum(h * x[2 * t - j] for j, h in enumerate(HALFBAND_TAPS) if h and 2 * t >= j)
        out.append(saturate((acc + ONE // 2) >> FRACTION_BITS))
    return out


def awkward_inputs() -> list[list[int]]:
    rng = random.Random(7)
    return [
        [rng.randint(-32768, 32767) for _ in range(333)],
        [rng.choice([-32768, 32767]) for _ in range(160)],  # overshoots: saturation
        [32767 if (i // 3) % 2 else -32768 for i in range(161)],
        [0] * 50,
        [-32768] * 60,
        [1234],
    ]


@pytest.mark.parametrize("x", awkward_inputs(), ids=lambda x: f"n={len(x)}")
def test_upsample_is_exact_fixed_point(x: list[int]) -> None:
    assert samples(upsample_8k_to_16k(pcm16(x))) == reference_up(x)


@pytest.mark.parametrize("x", awkward_inputs(), ids=lambda x: f"n={len(x)}")
def test_downsample_is_exact_fixed_point(x: list[int]) -> None:
    x = x + x[::-1]
    assert samples(downsample_16k_to_8k(pcm16(x))) == reference_down(x)


# --------------------------------------------------------------------------
# The filter and its frequency behaviour.


def response_db(freq: float, rate: int = 16000) -> float:
    w = 2 * math.pi * freq / rate
    h = sum(t * cmath.exp(-1j * w * i) for i, t in enumerate(HALFBAND_TAPS)) / ONE
    return db(abs(h))


def test_filter_is_the_documented_half_band() -> None:
    taps = HALFBAND_TAPS
    assert len(taps) == 47 and GROUP_DELAY_16K == 23
    assert taps == taps[::-1]  # linear phase
    assert taps[23] == ONE // 2
    assert all(taps[23 + k] == 0 for k in range(2, 24, 2))
    assert sum(taps) == ONE  # DC gain exactly 1
    assert all(abs(response_db(f)) < 0.015 for f in range(0, 3401, 50))
    assert response_db(4000) == pytest.approx(-6.02, abs=0.01)
    assert max(response_db(f) for f in range(4600, 8001, 25)) < -56
    assert response_db(6000) < -80


def test_upsampled_1khz_keeps_frequency_and_amplitude() -> None:
    amp = 12000
    out = samples(upsample_8k_to_16k(pcm16(tone(1000, 8000, 1000, amp))))
    steady = out[400:1600]  # whole periods, past the filter's start-up
    got, residual = fit_sine(steady, 1000, 16000)
    assert abs(db(got / amp)) < 0.5
    assert db(residual / amp) < -60  # nothing but 1 kHz (and rounding) left


def test_downsampled_1khz_keeps_amplitude() -> None:
    amp = 12000
    out = samples(downsample_16k_to_8k(pcm16(tone(1000, 16000, 2000, amp))))
    got, residual = fit_sine(out[200:1000], 1000, 8000)
    assert abs(db(got / amp)) < 0.5
    assert db(residual / amp) < -60


def test_6khz_does_not_alias_when_downsampling() -> None:
    x = tone(6000, 16000, 3200, 16000)
    out = samples(downsample_16k_to_8k(pcm16(x)))
    steady = out[100:1600]
    assert db(rms(steady) / rms(x)) <= -30
    alias, _ = fit_sine(steady, 2000, 8000)  # 6 kHz folds to 2 kHz at 8 kHz
    assert db(alias / 16000) <= -30


def test_impulse_response_peaks_at_the_group_delay() -> None:
    impulse = [16384] + [0] * 99
    up = samples(upsample_8k_to_16k(pcm16(impulse)))
    assert max(range(len(up)), key=lambda i: up[i]) == GROUP_DELAY_16K
    down = samples(downsample_16k_to_8k(pcm16([0] * 20 + [16384] + [0] * 179)))
    # The 8 kHz response is symmetric about (20 + 23) / 2 = 21.5.
    assert down[21] == down[22] == max(down)


def test_dc_passes_exactly() -> None:
    assert samples(upsample_8k_to_16k(pcm16([-7777] * 100)))[60:] == [-7777] * 140
    assert samples(downsample_16k_to_8k(pcm16([4321] * 200)))[30:] == [4321] * 70


# --------------------------------------------------------------------------
# Streaming and input handling.

Resampler = Callable[[], Upsampler8kTo16k | Downsampler16kTo8k]


def speech_like(n: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    return pcm16(
        [
            round(9000 * math.sin(i * 0.31) + 4000 * math.sin(i * 1.7 + 1) + rng.gauss(0, 800))
            for i in range(n)
        ]
    )


@pytest.mark.parametrize(
    ("make", "frame_bytes"), [(Upsampler8kTo16k, 320), (Downsampler16kTo8k, 640)], ids=["up", "down"]
)
def test_frame_by_frame_equals_whole_buffer(make: Resampler, frame_bytes: int) -> None:
    pcm = speech_like(50 * frame_bytes // 2)
    stream = make()
    pieces = [stream.process(pcm[i : i + frame_bytes]) for i in range(0, len(pcm), frame_bytes)]
    assert b"".join(pieces) == make().process(pcm)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([Upsampler8kTo16k, Downsampler16kTo8k]),
    st.lists(st.integers(0, 1200), max_size=6),
)
def test_any_split_gives_the_same_output(make: Resampler, cuts: list[int]) -> None:
    pcm = speech_like(1201, seed=len(cuts))
    bounds = [0, *sorted(2 * c for c in cuts), len(pcm)]
    stream = make()
    pieces = [stream.process(pcm[a:b]) for a, b in zip(bounds, bounds[1:])]
    assert b"".join(pieces) == make().process(pcm)


def test_downsampler_holds_an_odd_sample() -> None:
    stream = Downsampler16kTo8k()
    assert stream.process(pcm16([1000])) == b""
    assert len(stream.process(pcm16([2000]))) == 2
    assert len(downsample_16k_to_8k(pcm16([5] * 7))) == 6  # the last one waits forever


@pytest.mark.parametrize(
    "process",
    [
        upsample_8k_to_16k,
        downsample_16k_to_8k,
        lambda pcm: Upsampler8kTo16k().process(pcm),
        lambda pcm: Downsampler16kTo8k().process(pcm),
    ],
    ids=["upsample", "downsample", "Upsampler.process", "Downsampler.process"],
)
def test_odd_byte_length_is_rejected(process: Callable[[bytes], bytes]) -> None:
    with pytest.raises(ValueError, match="even number of bytes, got 321"):
        process(bytes(321))
    assert process(b"") == b""


def test_output_lengths() -> None:
    assert len(upsample_8k_to_16k(bytes(320))) == 640
    assert len(downsample_16k_to_8k(bytes(640))) == 320
    assert upsample_8k_to_16k(bytes(320)) == bytes(640)  # silence stays digital silence


# --------------------------------------------------------------------------
# 24 kHz -> 8 kHz (Gemini's output to the phone line).


def reference_down3(x: list[int]) -> list[int]:
    out = []
    for t in range(len(x) // 3):
        m = 3 * t + 2
        acc = sum(h * x[m - j] for j, h in enumerate(LOWPASS_24K_TAPS) if m >= j)
        out.append(saturate((acc + ONE // 2) >> FRACTION_BITS))
    return out


def response_24k_db(freq: float) -> float:
    w = 2 * math.pi * freq / 24000
    return db(abs(sum(t * cmath.exp(-1j * w * i) for i, t in enumerate(LOWPASS_24K_TAPS)) / ONE))


@pytest.mark.parametrize("x", awkward_inputs(), ids=lambda x: f"n={len(x)}")
def test_downsample_24k_is_exact_fixed_point(x: list[int]) -> None:
    x = x + x[::-1] + x
    assert samples(downsample_24k_to_8k(pcm16(x))) == reference_down3(x)


def test_24k_filter_is_the_documented_low_pass() -> None:
    assert len(LOWPASS_24K_TAPS) == 2 * GROUP_DELAY_24K + 1 and sum(LOWPASS_24K_TAPS) == ONE
    assert LOWPASS_24K_TAPS == LOWPASS_24K_TAPS[::-1]  # linear phase
    assert all(abs(response_24k_db(f)) < 0.015 for f in range(0, 3401, 100))
    assert abs(response_24k_db(4000) + 6) < 0.1
    assert max(response_24k_db(f) for f in range(4600, 12001, 50)) < -56


def test_24k_to_8k_keeps_1khz_and_kills_6khz() -> None:
    n = 24000 // 4  # 250 ms: whole periods of both tones
    keep = samples(downsample_24k_to_8k(pcm16(tone(1000, 24000, n, 10000))))[40:]
    amp, _ = fit_sine(keep, 1000, 8000)
    assert abs(db(amp / 10000)) < 0.05
    alias = samples(downsample_24k_to_8k(pcm16(tone(6000, 24000, n, 10000))))[40:]
    assert db(rms(alias) / (10000 / math.sqrt(2))) < -55  # 6 kHz would fold to 2 kHz


@pytest.mark.parametrize("chunk", [2, 6, 960, 1000, 1234])
def test_24k_frame_by_frame_equals_whole_buffer(chunk: int) -> None:
    data = speech_like(24000 * 2 // 10 * 3)
    d = Downsampler24kTo8k()
    assert b"".join(d.process(data[i:i + chunk]) for i in range(0, len(data), chunk)) == downsample_24k_to_8k(data)
    assert len(downsample_24k_to_8k(bytes(960))) == 320  # 20 ms in, 20 ms out
