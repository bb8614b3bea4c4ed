"""Short tones the bridge plays itself (an idle check-in on agents that cannot speak on request).

Built once per (frequency, length) and cached as μ-law bytes.
"""

from __future__ import annotations

import math
import struct
from functools import lru_cache

from twibridge.audio.g711 import pcm16_to_ulaw

RATE = 8000
#: Soft: about -18 dBFS, with 20 ms fades so it does not click.
AMPLITUDE = 0.12
FADE_MS = 20


@lru_cache(maxsize=16)
def tone_ulaw(freq_hz: float = 440.0, ms: int = 300) -> bytes:
    """A sine of ``freq_hz`` for ``ms``, faded in and out, as μ-law 8 kHz."""
    n = RATE * ms // 1000
    fade = RATE * FADE_MS // 1000
    peak = AMPLITUDE * 32767
    samples = [round(peak * min(1.0, i / fade, (n - 1 - i) / fade) * math.sin(2 * math.pi * freq_hz * i / RATE))
               for i in range(n)]
    return pcm16_to_ulaw(struct.pack(f"<{n}h", *samples))


#: μ-law silence (the code for a zero sample).
SILENCE = b"\xff"


@lru_cache(maxsize=1)
def hold_tone() -> bytes:
    """The built-in hold sound: a soft two-note chime, then quiet, 3 s per loop
    (the caller hears that the line is alive, not music they did not choose)."""
    quiet = SILENCE * (RATE * 2500 // 1000)
    return tone_ulaw(523.25, 250) + tone_ulaw(659.25, 250) + quiet
