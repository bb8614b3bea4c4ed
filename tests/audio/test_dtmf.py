"""twibridge.audio.dtmf: the tones decode back (Goertzel, as a phone menu would) to the digits sent."""

from __future__ import annotations

import math
import struct

import pytest

from twibridge.audio import dtmf
from twibridge.audio.g711 import ulaw_to_pcm16

LOWS = (697, 770, 852, 941)
HIGHS = (1209, 1336, 1477, 1633)


def goertzel_power(samples: list[float], freq: float, rate: int = 8000) -> float:
    k = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return s1 * s1 + s2 * s2 - k * s1 * s2


def decode(ulaw: bytes) -> str:
    """A DTMF receiver: 20 ms blocks, strongest low and high tone, a key per run of tone."""
    pcm = ulaw_to_pcm16(ulaw)
    samples = [float(v) for v in struct.unpack(f"<{len(pcm) // 2}h", pcm)]
    inverse = {v: k for k, v in dtmf.FREQUENCIES.items()}
    out, prev = [], None
    for start in range(0, len(samples), 160):
        block = samples[start:start + 160]
        energy = sum(x * x for x in block)
        key = None
        if energy > 1e6:
            low = max(LOWS, key=lambda f: goertzel_power(block, f))
            high = max(HIGHS, key=lambda f: goertzel_power(block, f))
            lp, hp = goertzel_power(block, low), goertzel_power(block, high)
            others = [goertzel_power(block, f) for f in (*LOWS, *HIGHS) if f not in (low, high)]
            if min(lp, hp) > 10 * max(others):  # both tones clearly above every other key's
                key = inverse[(low, high)]
        if key is not None and key != prev:
            out.append(key)
        prev = key
    return "".join(out)


def test_every_key_decodes_to_itself() -> None:
    for key in dtmf.FREQUENCIES:
        assert decode(dtmf.dtmf_ulaw(key)) == key


def test_a_sequence_with_repeats_decodes_in_order() -> None:
    audio = dtmf.dtmf_ulaw("1*0#09 9")
    assert decode(audio) == "1*0#099"
    assert len(audio) == 7 * 8000 * (dtmf.TONE_MS + dtmf.GAP_MS) // 1000


def test_lower_case_letters_are_keys() -> None:
    assert dtmf.check_digits("abcd") == "ABCD"


@pytest.mark.parametrize("bad", ["", "12x", "+1555", "E", "1" * 33])
def test_digits_outside_the_keypad_are_refused(bad: str) -> None:
    with pytest.raises(dtmf.InvalidDigits):
        dtmf.dtmf_ulaw(bad)


def test_tone_level_is_within_q24_and_unclipped() -> None:
    pcm = ulaw_to_pcm16(dtmf.key_ulaw("5")[: 8000 * dtmf.TONE_MS // 1000])
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    assert max(abs(s) for s in samples) < 32767 * 0.6
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    assert rms > 32767 * 0.1
