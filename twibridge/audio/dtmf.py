"""In-band DTMF tones (ITU-T Q.23), as μ-law 8 kHz, for the ``send_dtmf`` tool.

An agent that must get through another company's phone menu presses keys by
playing the tone pairs on the stream: Twilio's ``<Stream>`` carries audio
only, and a REST ``<Play digits>`` would leave the stream.  Each key is the
sum of one low-group and one high-group sine (Q.23's frequencies), 100 ms of
tone then 100 ms of silence (Q.24 asks for at least 40 ms of each; 100/100
is what most menus accept).  Each key's tone is built once and cached, so a
call pays nothing per sample after the first press of a key.
"""

from __future__ import annotations

import math
import struct
from functools import lru_cache

from twibridge.audio.g711 import ULAW_SILENCE, pcm16_to_ulaw

RATE = 8000
TONE_MS = 100
GAP_MS = 100
#: Each tone's peak (of two summed at this amplitude): about -9 dBm0 per tone,
#: within Q.24's -3..-15 dBm0 per frequency, well below clipping.
AMPLITUDE = 0.25

#: Q.23: key → (low-group Hz, high-group Hz).
FREQUENCIES: dict[str, tuple[int, int]] = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}
#: The most keys one ``send_dtmf`` may press (an agent loop must not hold the line).
MAX_DIGITS = 32


class InvalidDigits(ValueError):
    """Digits outside ``0-9 * # A-D``, or too many; the message is safe to show the agent."""


def check_digits(digits: str) -> str:
    """``digits`` normalised (upper case, no spaces/commas); :class:`InvalidDigits` otherwise."""
    keys = "".join(ch for ch in digits.upper() if ch not in " ,-")
    if not keys:
        raise InvalidDigits("no digits given")
    bad = sorted({ch for ch in keys if ch not in FREQUENCIES})
    if bad:
        raise InvalidDigits(f"not DTMF keys: {''.join(bad)!r} (allowed: 0-9 * # A B C D)")
    if len(keys) > MAX_DIGITS:
        raise InvalidDigits(f"too many digits ({len(keys)}, at most {MAX_DIGITS})")
    return keys


@lru_cache(maxsize=len(FREQUENCIES))
def key_ulaw(key: str) -> bytes:
    """One key: ``TONE_MS`` of its tone pair then ``GAP_MS`` of silence, μ-law."""
    low, high = FREQUENCIES[key]
    n = RATE * TONE_MS // 1000
    peak = AMPLITUDE * 32767
    samples = [round(peak * (math.sin(2 * math.pi * low * i / RATE) + math.sin(2 * math.pi * high * i / RATE)))
               for i in range(n)]
    tone = pcm16_to_ulaw(struct.pack(f"<{n}h", *samples))
    return tone + bytes([ULAW_SILENCE]) * (RATE * GAP_MS // 1000)


def dtmf_ulaw(digits: str) -> bytes:
    """The tones for ``digits`` back to back (:class:`InvalidDigits` for bad input)."""
    return b"".join(key_ulaw(k) for k in check_digits(digits))
