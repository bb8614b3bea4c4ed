"""G.711 tables against an independent reference and, where present, audioop.

The reference codec below is written from the G.711 description (sign bit,
3-bit segment, 4-bit mantissa; μ-law on 14-bit samples with a bias of 33,
A-law on 13-bit samples without one), one sample at a time, sharing no code
with the module.  16-bit PCM enters the 14/13-bit domain by an arithmetic
shift, as audioop does.
"""

from __future__ import annotations

import math
import struct
import warnings
from types import ModuleType
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twibridge.audio import g711
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

ALL_CODES = bytes(range(256))
ALL_SAMPLES = range(-32768, 32768)
ALL_PCM = struct.pack("<65536h", *ALL_SAMPLES)

# --------------------------------------------------------------------------
# Reference codec.

ULAW_SEGMENT_TOPS = [64 << s for s in range(8)]  # biased magnitude below which segment s ends
ALAW_SEGMENT_ENDS = [31, 63, 127, 255, 511, 1023, 2047, 4095]  # 13-bit magnitude


def ref_ulaw_encode(x: int) -> int:
    x14 = x >> 2
    magnitude = min(abs(x14), 8158)  # 8158 is the largest 14-bit μ-law magnitude
    biased = magnitude + 33
    segment = 0
    while biased >= ULAW_SEGMENT_TOPS[segment]:
        segment += 1
    mantissa = (biased >> (segment + 1)) - 16  # the 4 bits after the leading one
    sign = 0x80 if x14 < 0 else 0x00
    return ~(sign | segment << 4 | mantissa) & 0xFF  # μ-law sends every bit inverted


def ref_ulaw_decode(code: int) -> int:
    c = ~code & 0xFF
    segment, mantissa = (c >> 4) & 7, c & 15
    magnitude14 = ((2 * mantissa + 33) << segment) - 33
    return -4 * magnitude14 if c & 0x80 else 4 * magnitude14


def ref_alaw_encode(x: int) -> int:
    x13 = x >> 3
    positive = x13 >= 0
    magnitude = x13 if positive else -x13 - 1
    segment = next(s for s, end in enumerate(ALAW_SEGMENT_ENDS) if magnitude <= end)
    mantissa = (magnitude >> max(segment, 1)) & 15
    return ((0x80 if positive else 0) | segment << 4 | mantissa) ^ 0x55


def ref_alaw_decode(code: int) -> int:
    c = code ^ 0x55
    segment, mantissa = (c >> 4) & 7, c & 15
    magnitude13 = 2 * mantissa + 1 if segment == 0 else (2 * mantissa + 33) << (segment - 1)
    return 8 * magnitude13 if c & 0x80 else -8 * magnitude13


def samples(pcm: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(pcm) // 2}h", pcm)


def pcm16(values: list[int] | tuple[int, ...] | range) -> bytes:
    return struct.pack(f"<{len(values)}h", *values)


# --------------------------------------------------------------------------
# Bit-exactness.


def test_ulaw_decode_every_code() -> None:
    assert samples(ulaw_to_pcm16(ALL_CODES)) == tuple(ref_ulaw_decode(c) for c in ALL_CODES)


def test_alaw_decode_every_code() -> None:
    assert samples(alaw_to_pcm16(ALL_CODES)) == tuple(ref_alaw_decode(c) for c in ALL_CODES)


def test_ulaw_encode_every_pcm16_value() -> None:
    assert pcm16_to_ulaw(ALL_PCM) == bytes(ref_ulaw_encode(x) for x in ALL_SAMPLES)


def test_alaw_encode_every_pcm16_value() -> None:
    assert pcm16_to_alaw(ALL_PCM) == bytes(ref_alaw_encode(x) for x in ALL_SAMPLES)


def _audioop() -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop  # deprecated in 3.11, removed in 3.13
        except ImportError:
            return None
    return audioop


@pytest.mark.skipif(_audioop() is None, reason="audioop is not available (Python >= 3.13)")
def test_same_as_audioop() -> None:
    audioop = _audioop()
    assert audioop is not None
    assert ulaw_to_pcm16(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert alaw_to_pcm16(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)
    assert pcm16_to_ulaw(ALL_PCM) == audioop.lin2ulaw(ALL_PCM, 2)
    assert pcm16_to_alaw(ALL_PCM) == audioop.lin2alaw(ALL_PCM, 2)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-32768, 32767), max_size=400))
def test_encode_any_length(values: list[int]) -> None:
    # The encoders pack a whole buffer into one integer with per-length
    # constants; every length must give the per-sample answer.
    pcm = pcm16(values)
    assert pcm16_to_ulaw(pcm) == bytes(ref_ulaw_encode(x) for x in values)
    assert pcm16_to_alaw(pcm) == bytes(ref_alaw_encode(x) for x in values)


# --------------------------------------------------------------------------
# Round trips.


@pytest.mark.parametrize(
    ("encode", "decode", "mask"),
    [(pcm16_to_ulaw, ulaw_to_pcm16, 0xFF), (pcm16_to_alaw, alaw_to_pcm16, 0x55)],
    ids=["ulaw", "alaw"],
)
def test_decode_encode_within_one_step(
    encode: Callable[[bytes], bytes], decode: Callable[[bytes], bytes], mask: int
) -> None:
    codes = encode(ALL_PCM)
    for x, code, y in zip(ALL_SAMPLES, codes, samples(decode(codes))):
        segment = ((code ^ mask) >> 4) & 7
        step = 8 << segment if mask == 0xFF else 8 << max(segment, 1)  # in 16-bit units
        assert abs(y - x) <= step, (x, code, y)


def test_ulaw_encode_decode_is_identity_but_for_negative_zero() -> None:
    # 0x7F is "-0": it decodes to 0 like 0xFF, and 0 encodes to 0xFF.
    again = pcm16_to_ulaw(ulaw_to_pcm16(ALL_CODES))
    assert [c for c in ALL_CODES if again[c] != c] == [0x7F]
    assert again[0x7F] == 0xFF


def test_alaw_encode_decode_is_identity() -> None:
    # A-law has no zero level (the smallest are ±8), so no code is lost.
    assert pcm16_to_alaw(alaw_to_pcm16(ALL_CODES)) == ALL_CODES


def test_silence_bytes() -> None:
    assert ulaw_to_pcm16(bytes([ULAW_SILENCE])) == pcm16([0])
    assert pcm16_to_ulaw(pcm16([0])) == bytes([ULAW_SILENCE])
    assert pcm16_to_alaw(pcm16([0])) == bytes([ALAW_SILENCE])
    assert samples(alaw_to_pcm16(bytes([ALAW_SILENCE]))) == (8,)


# --------------------------------------------------------------------------
# Input handling.


@pytest.mark.parametrize("encode", [pcm16_to_ulaw, pcm16_to_alaw])
def test_odd_length_pcm_is_rejected(encode: Callable[[bytes], bytes]) -> None:
    with pytest.raises(ValueError, match="even number of bytes, got 161"):
        encode(bytes(161))


@pytest.mark.parametrize("codec", [pcm16_to_ulaw, pcm16_to_alaw, ulaw_to_pcm16, alaw_to_pcm16])
def test_empty_input(codec: Callable[[bytes], bytes]) -> None:
    assert codec(b"") == b""


def test_bytearray_input() -> None:
    # Typed as bytes, but a receive buffer (bytearray) works as well.
    pcm = pcm16(range(-16000, 16000, 200))
    codes = pcm16_to_ulaw(pcm)
    as_bytearray: Callable[[bytes], bytes] = bytearray  # type: ignore[assignment]
    for codec, data in [
        (pcm16_to_ulaw, pcm),
        (pcm16_to_alaw, pcm),
        (ulaw_to_pcm16, codes),
        (alaw_to_pcm16, codes),
    ]:
        assert codec(as_bytearray(data)) == codec(data)
    assert ulaw_dbfs(as_bytearray(codes)) == ulaw_dbfs(codes)


def test_tables_are_immutable() -> None:
    for name in dir(g711):
        if name.startswith(("_ULAW_", "_ALAW_")):
            assert isinstance(getattr(g711, name), (bytes, str, tuple)), name


# --------------------------------------------------------------------------
# Level.


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_mean_square_matches_decoded_samples(frame: bytes) -> None:
    decoded = samples(ulaw_to_pcm16(frame))
    expected = sum(v * v for v in decoded) / len(decoded) if decoded else 0.0
    assert ulaw_mean_square(frame) == expected
    db = ulaw_dbfs(frame)
    if expected:
        assert db == pytest.approx(max(DBFS_FLOOR, 10 * math.log10(expected / 32768**2)))
    else:
        assert db == DBFS_FLOOR


def test_dbfs_reference_levels() -> None:
    assert ulaw_dbfs(b"") == DBFS_FLOOR
    assert ulaw_dbfs(bytes([ULAW_SILENCE]) * 160) == DBFS_FLOOR
    assert ulaw_dbfs(b"\x7f\xff" * 80) == DBFS_FLOOR  # both zeros
    # Loudest codes, alternating sign: a square wave at ±32124.
    assert ulaw_dbfs(b"\x80\x00" * 80) == pytest.approx(20 * math.log10(32124 / 32768))
    sine = pcm16([round(16384 * math.sin(2 * math.pi * i / 40)) for i in range(160)])
    assert ulaw_dbfs(pcm16_to_ulaw(sine)) == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.05)
