"""Sans-IO audio helpers: G.711 codecs, frame levels and 8/16 kHz resampling.

Pure standard-library Python with no per-sample Python loop, so a call's
per-frame audio work stays in the low microseconds without ``audioop``
(deprecated, gone in 3.13) or numpy (whose fixed overhead per call costs more
than it saves on 160-sample frames).  Nothing here awaits or keeps time.
"""

from __future__ import annotations

from twibridge.audio.g711 import (
    ALAW_SILENCE,
    DBFS_FLOOR,
    ULAW_SILENCE,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    ulaw_dbfs,
    ulaw_mean_square,
    ulaw_to_pcm16,
)
from twibridge.audio.resample import (
    GROUP_DELAY_16K,
    Downsampler16kTo8k,
    Upsampler8kTo16k,
    downsample_16k_to_8k,
    upsample_8k_to_16k,
)

__all__ = [
    "ALAW_SILENCE",
    "DBFS_FLOOR",
    "GROUP_DELAY_16K",
    "ULAW_SILENCE",
    "Downsampler16kTo8k",
    "Upsampler8kTo16k",
    "alaw_to_pcm16",
    "downsample_16k_to_8k",
    "pcm16_to_alaw",
    "pcm16_to_ulaw",
    "ulaw_dbfs",
    "ulaw_mean_square",
    "ulaw_to_pcm16",
    "upsample_8k_to_16k",
]
