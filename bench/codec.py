"""Per-frame cost of twibridge's pure-Python audio path, side by side with audioop.

Run from the repository root::

    .venv/bin/python -m bench.codec

Every row is one 20 ms frame (160 samples at 8 kHz, 320 at 16 kHz) of a
speech-like signal, timed with :mod:`timeit` in the same process as the
reference: ``audioop`` where it still imports (its DeprecationWarning is
silenced here only), otherwise straightforward numpy equivalents.  Each
figure is the best of 15 repeats of ~20 ms, alternating with the reference's
repeats (the median is shown too); the ratio is best/best.  The whole run
takes about 10 s.

Note that ``audioop.ratecv`` interpolates linearly, which is far cheaper and
far worse than the 47-tap half-band filter it is compared with here.

:func:`run` returns the rows for a report runner; :func:`main` prints them.
"""

from __future__ import annotations

import math
import platform
import random
import statistics
import struct
import sys
import timeit
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

from twibridge.audio.g711 import (
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    ulaw_dbfs,
    ulaw_to_pcm16,
)
from twibridge.audio.resample import HALFBAND_TAPS, Downsampler16kTo8k, Upsampler8kTo16k

__all__ = ["format_table", "main", "run"]

REPEAT = 15
TARGET_S = 0.02  # per repeat


def _speech_like(n: int, rate: int, seed: int) -> bytes:
    """A voiced-speech stand-in: 140 Hz harmonics shaped by two formants, plus noise.

    The codecs cost the same for any data, the resamplers nearly so: their
    saturation pass runs only when some output overflows int16, which
    full-scale noise would trigger on every frame and speech rarely does.
    """
    rng = random.Random(seed)
    out: list[int] = []
    for i in range(n):
        t = i / rate
        v = sum(
            math.sin(2 * math.pi * 140 * h * t) / h * (2.0 if 4 <= h <= 6 else 1.0 if 14 <= h <= 18 else 0.4)
            for h in range(1, 25)
            if 140 * h < rate / 2
        )
        out.append(max(-32768, min(32767, round(4000 * v + rng.gauss(0, 300)))))
    return struct.pack(f"<{n}h", *out)


def _audioop() -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:
            return None
    return audioop


Case = tuple[str, Callable[[], object], Callable[[], object]]


class _RateCV:
    """``audioop.ratecv`` with its state carried from frame to frame, like ours."""

    def __init__(self, audioop: Any, src: int, dst: int) -> None:
        self._audioop, self._src, self._dst, self._state = audioop, src, dst, None

    def __call__(self, pcm: bytes) -> bytes:
        out, self._state = self._audioop.ratecv(pcm, 2, 1, self._src, self._dst, self._state)
        return bytes(out)


def _cases_audioop(audioop: Any, pcm8: bytes, pcm16: bytes, ulaw: bytes, alaw: bytes) -> list[Case]:
    up, down, up2, down2 = Upsampler8kTo16k(), Downsampler16kTo8k(), Upsampler8kTo16k(), Downsampler16kTo8k()
    ref_up, ref_down = _RateCV(audioop, 8000, 16000), _RateCV(audioop, 16000, 8000)
    ref_up2, ref_down2 = _RateCV(audioop, 8000, 16000), _RateCV(audioop, 16000, 8000)

    def level(frame: bytes) -> float:
        rms = audioop.rms(audioop.ulaw2lin(frame, 2), 2)
        return 20 * math.log10(rms / 32768) if rms else -100.0

    return [
        ("μ-law decode", lambda: ulaw_to_pcm16(ulaw), lambda: audioop.ulaw2lin(ulaw, 2)),
        ("μ-law encode", lambda: pcm16_to_ulaw(pcm8), lambda: audioop.lin2ulaw(pcm8, 2)),
        ("A-law decode", lambda: alaw_to_pcm16(alaw), lambda: audioop.alaw2lin(alaw, 2)),
        ("A-law encode", lambda: pcm16_to_alaw(pcm8), lambda: audioop.lin2alaw(pcm8, 2)),
        ("μ-law level (dBFS)", lambda: ulaw_dbfs(ulaw), lambda: level(ulaw)),
        ("8 → 16 kHz", lambda: up.process(pcm8), lambda: ref_up(pcm8)),
        ("16 → 8 kHz", lambda: down.process(pcm16), lambda: ref_down(pcm16)),
        (
            "inbound: μ-law 8k → PCM16 16k",
            lambda: up2.process(ulaw_to_pcm16(ulaw)),
            lambda: ref_up2(audioop.ulaw2lin(ulaw, 2)),
        ),
        (
            "outbound: PCM16 16k → μ-law 8k",
            lambda: pcm16_to_ulaw(down2.process(pcm16)),
            lambda: audioop.lin2ulaw(ref_down2(pcm16), 2),
        ),
    ]


def _cases_numpy(pcm8: bytes, pcm16: bytes, ulaw: bytes, alaw: bytes) -> list[Case]:
    import numpy as np

    # Look-up tables borrowed from our codec: only the timing matters here.
    dec_u = np.frombuffer(ulaw_to_pcm16(bytes(range(256))), "<i2").copy()
    dec_a = np.frombuffer(alaw_to_pcm16(bytes(range(256))), "<i2").copy()
    every = np.arange(65536, dtype="<u2").tobytes()
    enc_u = np.frombuffer(pcm16_to_ulaw(every), np.uint8).copy()
    enc_a = np.frombuffer(pcm16_to_alaw(every), np.uint8).copy()
    sq = dec_u.astype(np.float64) ** 2
    taps = np.array(HALFBAND_TAPS, np.float64) / 16384

    def level(frame: bytes) -> float:
        ms = float(sq[np.frombuffer(frame, np.uint8)].mean())
        return 10 * math.log10(ms / 32768**2) if ms else -100.0

    def up(pcm: bytes) -> bytes:
        x = np.zeros(len(pcm), np.float64)
        x[0::2] = np.frombuffer(pcm, "<i2")
        y = np.convolve(x, 2 * taps)[: len(x)]
        return np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes()

    def down(pcm: bytes) -> bytes:
        y = np.convolve(np.frombuffer(pcm, "<i2").astype(np.float64), taps)[: len(pcm) // 2 : 2]
        return np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes()

    def encode(table: Any, pcm: bytes) -> bytes:
        return bytes(table[np.frombuffer(pcm, "<u2")].tobytes())

    u2, d2 = Upsampler8kTo16k(), Downsampler16kTo8k()
    u1, d1 = Upsampler8kTo16k(), Downsampler16kTo8k()
    return [
        ("μ-law decode", lambda: ulaw_to_pcm16(ulaw), lambda: dec_u[np.frombuffer(ulaw, np.uint8)].tobytes()),
        ("μ-law encode", lambda: pcm16_to_ulaw(pcm8), lambda: encode(enc_u, pcm8)),
        ("A-law decode", lambda: alaw_to_pcm16(alaw), lambda: dec_a[np.frombuffer(alaw, np.uint8)].tobytes()),
        ("A-law encode", lambda: pcm16_to_alaw(pcm8), lambda: encode(enc_a, pcm8)),
        ("μ-law level (dBFS)", lambda: ulaw_dbfs(ulaw), lambda: level(ulaw)),
        ("8 → 16 kHz", lambda: u1.process(pcm8), lambda: up(pcm8)),
        ("16 → 8 kHz", lambda: d1.process(pcm16), lambda: down(pcm16)),
        (
            "inbound: μ-law 8k → PCM16 16k",
            lambda: u2.process(ulaw_to_pcm16(ulaw)),
            lambda: up(dec_u[np.frombuffer(ulaw, np.uint8)].tobytes()),
        ),
        (
            "outbound: PCM16 16k → μ-law 8k",
            lambda: pcm16_to_ulaw(d2.process(pcm16)),
            lambda: encode(enc_u, down(pcm16)),
        ),
    ]


def _number(timer: timeit.Timer) -> int:
    """Calls per repeat so that one repeat takes about TARGET_S."""
    number = 1
    while (elapsed := timer.timeit(number)) < TARGET_S / 4:
        number *= 4
    return max(1, round(number * TARGET_S / max(elapsed, 1e-9)))


def _time_pair(ours: Callable[[], object], theirs: Callable[[], object], repeat: int) -> list[float]:
    """Best and median µs per call of both, their repeats interleaved.

    Alternating the two keeps a burst of load on a shared machine from
    landing on one side of the comparison only.
    """
    timers = timeit.Timer(ours), timeit.Timer(theirs)
    numbers = [_number(t) for t in timers]
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for timer, number, out in zip(timers, numbers, samples):
            out.append(timer.timeit(number) / number * 1e6)
    return [f(s) for s in samples for f in (min, statistics.median)]


def run(repeat: int = REPEAT) -> list[dict[str, Any]]:
    """Time every case; one dict per row (all times in µs per 20 ms frame)."""
    pcm8 = _speech_like(160, 8000, seed=1)
    pcm16 = _speech_like(320, 16000, seed=2)
    ulaw, alaw = pcm16_to_ulaw(pcm8), pcm16_to_alaw(pcm8)
    audioop = _audioop()
    if audioop is not None:
        reference, cases = "audioop", _cases_audioop(audioop, pcm8, pcm16, ulaw, alaw)
    else:
        reference, cases = "numpy", _cases_numpy(pcm8, pcm16, ulaw, alaw)
    rows: list[dict[str, Any]] = []
    for name, ours, theirs in cases:
        best, median, ref_best, ref_median = _time_pair(ours, theirs, repeat)
        rows.append(
            {
                "operation": name,
                "twibridge_us": round(best, 2),
                "twibridge_median_us": round(median, 2),
                "reference": reference,
                "reference_us": round(ref_best, 2),
                "reference_median_us": round(ref_median, 2),
                "ratio": round(best / ref_best, 1),
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    ref = rows[0]["reference"] if rows else "reference"
    lines = [
        f"| per 20 ms frame | twibridge µs (median) | {ref} µs (median) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['operation']} | {r['twibridge_us']:.2f} ({r['twibridge_median_us']:.2f}) "
            f"| {r['reference_us']:.2f} ({r['reference_median_us']:.2f}) | {r['ratio']:.1f}× |"
        )
    return "\n".join(lines)


def main() -> None:
    rows = run()
    print(
        f"CPython {platform.python_version()} on {platform.machine()} ({sys.platform}); "
        f"best of {REPEAT}, µs per 20 ms frame; ratio = twibridge / {rows[0]['reference']}"
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()
