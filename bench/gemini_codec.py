"""Per-frame cost of the Gemini transcoding, side by side with soxr (a C resampler), in one run.

Run from the repository root (soxr is a bench/test extra, not a runtime dependency)::

    .venv/bin/pip install -e '.[bench]'   # or: .venv/bin/pip install soxr
    .venv/bin/python -m bench.gemini_codec

Both directions of a Gemini call, per 20 ms frame, exactly as
``twibridge/agents/gemini_protocol.py`` does them, against the same chains
with ``soxr.ResampleStream`` (stateful, like ours; quality "HQ", its default)
doing the rate change and the same G.711 code around it:

* inbound: μ-law 8 kHz (160 bytes) → PCM16 → 16 kHz (the 47-tap half-band);
* outbound: PCM16 24 kHz (480 samples) → 8 kHz (the 73-tap low-pass) → μ-law.

Timing: best (and median) of 15 repeats of ~20 ms each, the two sides'
repeats interleaved (``bench.codec``'s method).  "Gemini calls per core" is
what the transcoding alone would allow: one core's second divided by 50
frames × (inbound + outbound) per call-second — an upper bound, not a load
test (the socket, JSON and base64 work of a call come on top).
"""

from __future__ import annotations

import platform
import sys
from typing import Any

import numpy as np

from bench.codec import REPEAT, _speech_like, _time_pair
from twibridge.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from twibridge.audio.resample import Downsampler24kTo8k, Upsampler8kTo16k

__all__ = ["main", "run"]


def _cases() -> list[tuple[str, Any, Any]]:
    import soxr

    ulaw = pcm16_to_ulaw(_speech_like(160, 8000, seed=1))
    pcm24 = _speech_like(480, 24000, seed=3)
    up, down = Upsampler8kTo16k(), Downsampler24kTo8k()
    s_up = soxr.ResampleStream(8000, 16000, 1, dtype="int16", quality="HQ")
    s_down = soxr.ResampleStream(24000, 8000, 1, dtype="int16", quality="HQ")

    def soxr_in() -> bytes:
        return bytes(s_up.resample_chunk(np.frombuffer(ulaw_to_pcm16(ulaw), "<i2")).tobytes())

    def soxr_out() -> bytes:
        return pcm16_to_ulaw(s_down.resample_chunk(np.frombuffer(pcm24, "<i2")).tobytes())

    return [
        ("inbound: μ-law 8k → PCM16 16k", lambda: up.process(ulaw_to_pcm16(ulaw)), soxr_in),
        ("outbound: PCM16 24k → μ-law 8k", lambda: pcm16_to_ulaw(down.process(pcm24)), soxr_out),
    ]


def run(repeat: int = REPEAT) -> list[dict[str, Any]]:
    """One row per direction plus the per-call total (µs per 20 ms frame)."""
    rows: list[dict[str, Any]] = []
    for name, ours, theirs in _cases():
        best, median, ref_best, ref_median = _time_pair(ours, theirs, repeat)
        rows.append({"operation": name, "twibridge_us": round(best, 2), "twibridge_median_us": round(median, 2),
                     "reference": "soxr", "reference_us": round(ref_best, 2),
                     "reference_median_us": round(ref_median, 2), "ratio": round(best / ref_best, 1)})
    ours_total = sum(r["twibridge_us"] for r in rows)
    ref_total = sum(r["reference_us"] for r in rows)
    rows.append({"operation": "both ways, one frame", "twibridge_us": round(ours_total, 2),
                 "twibridge_median_us": round(sum(r["twibridge_median_us"] for r in rows), 2),
                 "reference": "soxr", "reference_us": round(ref_total, 2),
                 "reference_median_us": round(sum(r["reference_median_us"] for r in rows), 2),
                 "ratio": round(ours_total / ref_total, 1)})
    return rows


def calls_per_core(us_per_frame_both_ways: float) -> int:
    """Calls one core could transcode: 50 frames per call-second."""
    return int(1e6 / (50 * us_per_frame_both_ways))


def main() -> None:
    rows = run()
    print(f"CPython {platform.python_version()} on {platform.machine()} ({sys.platform}); best of {REPEAT}, "
          "µs per 20 ms frame; ratio = twibridge / soxr")
    print("| per 20 ms frame | twibridge µs (median) | soxr µs (median) | ratio |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['operation']} | {r['twibridge_us']:.2f} ({r['twibridge_median_us']:.2f}) "
              f"| {r['reference_us']:.2f} ({r['reference_median_us']:.2f}) | {r['ratio']:.1f}× |")
    total = rows[-1]
    print(f"\nGemini calls per core, transcoding alone: twibridge {calls_per_core(total['twibridge_us'])}, "
          f"soxr {calls_per_core(total['reference_us'])}")


if __name__ == "__main__":
    main()
