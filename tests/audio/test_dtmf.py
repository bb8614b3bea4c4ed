"""twibridge.audio.dtmf: the tones decode back (Goertzel, as a phone menu would) to the digits sent."""

from __future__ import annotations

import math
import struct

import pytest

from support import dtmf_decode as decode
from twibridge.audio import dtmf
from twibridge.audio.g711 import ulaw_to_pcm16

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
