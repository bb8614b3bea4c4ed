"""8 kHz <-> 16 kHz and 24 kHz -> 8 kHz resampling of PCM16 with FIR filters, in pure Python.

Twilio speaks 8 kHz; most agents want 16 kHz.  Repeating or averaging samples
is cheap but puts images/aliases of speech at 4-8 kHz right into the band an
ASR model listens to, so both directions use one proper low-pass filter.

Filter: a 47-tap half-band FIR (h[23 + k] = 0 for even k != 0), windowed
sinc cut at 4 kHz with a Kaiser window (beta 5.2), taps in Q14 fixed point
and adjusted so the DC gain is exactly 1.  Measured with the quantised taps
at 16 kHz: passband flat within ±0.015 dB up to 3.4 kHz (the telephone band),
-6 dB at 4 kHz, stop band at least 56 dB down from 4.6 kHz (85 dB at 6 kHz).  It is
linear phase: the group delay is :data:`GROUP_DELAY_16K` = 23 samples at
16 kHz (1.44 ms) in either direction.

Half-band means polyphase is almost free: upsampling needs only the 24
even-indexed taps (the odd phase is the input delayed), and downsampling is
those 24 taps on the even input samples plus half of one odd sample.

Arithmetic is exact integer fixed point with round-half-up and saturation to
int16, and there is no per-sample Python loop: the FIR is one big-integer
multiplication.  Samples are packed into 32-bit lanes of one integer
(offset binary, so every lane is non-negative), the taps into another, and
the product's lanes are the convolution sums.  A constant added to every
lane keeps all sums (even partial ones at the edges) inside [0, 2**32), so no
lane borrows from or carries into its neighbour; after one shift each lane
holds ``sample + 3 * 2**15`` in 18 bits, whose two top bits say "below
-32768", "in range" or "above 32767" for the saturation masks.

The stateful :class:`Upsampler8kTo16k` / :class:`Downsampler16kTo8k` keep the
last 23 input samples (23 pairs when downsampling), still lane-packed,
between frames, so feeding a stream frame
by frame gives exactly the same bytes as one call on the whole buffer; the
one-shot functions are a fresh object's :meth:`process`.

24 kHz -> 8 kHz (Gemini Live's output to a phone line): :class:`Downsampler24kTo8k`,
a 73-tap low-pass FIR (Kaiser-windowed sinc cut at 4 kHz, beta 5.65, Q14 taps
with the DC gain exactly 1), then every third sample.  Measured with the
quantised taps at 24 kHz: passband within ±0.015 dB up to 3.4 kHz, stop band at
least 56 dB down from 4.6 kHz on (61 dB from 5 kHz; nothing above 4.6 kHz can fold back
below 3.4 kHz at 8 kHz), -6 dB at 4 kHz.  Linear phase, group delay
:data:`GROUP_DELAY_24K` = 36 samples at 24 kHz (1.5 ms).  Same lane-packed
big-integer arithmetic as above, in polyphase form (three multiplications of
every third sample by every third tap, at the output rate: a third of the
work of filtering at 24 kHz); the last 72 input samples (24 per phase) and an
incomplete trailing triple are kept between calls, so frame-by-frame output
equals the one-shot output byte for byte.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

from twibridge.audio.g711 import check_pcm16

__all__ = [
    "FRACTION_BITS",
    "GROUP_DELAY_16K",
    "HALFBAND_TAPS",
    "Downsampler16kTo8k",
    "Downsampler24kTo8k",
    "GROUP_DELAY_24K",
    "Upsampler8kTo16k",
    "downsample_16k_to_8k",
    "downsample_24k_to_8k",
    "upsample_8k_to_16k",
]

#: Fixed-point fraction bits of :data:`HALFBAND_TAPS` (they sum to 2**14).
FRACTION_BITS = 14
_HALF_TAPS = 12  # nonzero taps on each side of the centre
_KAISER_BETA = 5.2
_CENTRE = 2 * _HALF_TAPS - 1  # index of the 0.5 tap
#: Group delay of both resamplers, in 16 kHz samples.
GROUP_DELAY_16K = _CENTRE


def _bessel_i0(x: float) -> float:
    total = term = 1.0
    k = 1
    while term > 1e-17 * total:
        term *= (x / (2 * k)) ** 2
        total += term
        k += 1
    return total


def _design_halfband() -> tuple[int, ...]:
    """The 47 Q14 taps: Kaiser-windowed sinc, zero at even offsets, DC gain 1."""
    one = 1 << FRACTION_BITS
    side: list[int] = []  # taps at offsets 1, 3, 5, ... from the centre
    for k in range(1, 2 * _HALF_TAPS, 2):
        window = _bessel_i0(_KAISER_BETA * math.sqrt(1.0 - (k / _CENTRE) ** 2)) / _bessel_i0(_KAISER_BETA)
        side.append(round(one * math.sin(math.pi * k / 2) / (math.pi * k) * window))
    side[0] += one // 4 - sum(side)  # each side must sum to exactly 1/4
    taps = [0] * (2 * _CENTRE + 1)
    taps[_CENTRE] = one // 2
    for k, tap in zip(range(1, 2 * _HALF_TAPS, 2), side):
        taps[_CENTRE - k] = taps[_CENTRE + k] = tap
    return tuple(taps)


#: The half-band filter, Q14, 47 taps (index 23 is the centre, 0.5).
HALFBAND_TAPS = _design_halfband()
assert sum(HALFBAND_TAPS) == 1 << FRACTION_BITS

_LANE = 32  # bits per sample lane
_HIST = _CENTRE  # lanes of history each direction keeps
_BRANCH = HALFBAND_TAPS[0::2]  # the 24 even-indexed taps (the others are 0 or the centre)
# Upsampling: zero-stuffing halves the signal, so the branch gets gain 2.
_UP_POLY = sum(2 * tap << (_LANE * k) for k, tap in enumerate(_BRANCH))
_DOWN_POLY = sum(tap << (_LANE * k) for k, tap in enumerate(_BRANCH))
# Per lane: sum(tap * (x + 2**15)) = y + 2**29; adding this gives
# y + 3 * 2**29 + 2**13 (round half up), i.e. sample + 3 * 2**15 after the shift.
_LANE_OFFSET = (1 << (FRACTION_BITS + 16)) + (1 << (FRACTION_BITS - 1))
_SHIFT = _LANE * _HIST + FRACTION_BITS


def _lane_bounds_hold() -> bool:
    """Whether every lane sum, however few taps overlap, stays in [0, 2**32).

    Checked at import for both tap sets (up: doubled branch; down: branch
    plus the centre tap), as is the full-window bound that keeps the
    saturation flags in {0, 1, 2}.
    """
    for taps in ([2 * t for t in _BRANCH], [*_BRANCH, HALFBAND_TAPS[_CENTRE]]):
        lowest = _LANE_OFFSET + 0xFFFF * sum(t for t in taps if t < 0)
        highest = _LANE_OFFSET + 0xFFFF * sum(t for t in taps if t > 0)
        if lowest < 0 or highest >= 1 << _LANE or sum(map(abs, taps)) >= 3 << FRACTION_BITS:
            return False
    return True


assert _lane_bounds_hold()


class _Lanes(NamedTuple):
    """Constants for a frame of ``n`` lanes (frames repeat lengths: cached)."""

    one: int  # 1 in each of the n output lanes
    flag_bits: int  # 0b11 << 16 per lane: where "below / in / above range" sits
    in_range: int  # 0b01 << 16 per lane
    low16: int  # 0xFFFF per lane
    high16: int  # 0xFFFF0000 per lane
    sign: int  # 0x8000 per lane: offset binary <-> two's complement
    sign2: int  # 0x80008000 per lane
    wide_low16: int  # 0xFFFF in each of the n + history input lanes
    offset: int  # _LANE_OFFSET in each of the n + history product lanes


@lru_cache(maxsize=32)
def _lanes(n: int) -> _Lanes:
    one = int.from_bytes(b"\x01\x00\x00\x00" * n, "little")
    wide = int.from_bytes(b"\x01\x00\x00\x00" * (n + _HIST), "little")
    return _Lanes(
        one, one * 0x30000, one << 16, one * 0xFFFF, one * 0xFFFF0000, one * 0x8000, one * 0x80008000,
        wide * 0xFFFF, wide * _LANE_OFFSET,
    )  # fmt: skip


# Initial history: zero samples, offset binary (one sample per lane up, a pair down).
_IDLE_UP = 0x8000 * int.from_bytes(b"\x01\x00\x00\x00" * _HIST, "little")
_IDLE_DOWN = 0x80008000 * int.from_bytes(b"\x01\x00\x00\x00" * _HIST, "little")


def _clamp(t: int, k: _Lanes) -> int:
    """Offset-binary int16 in the low half of each of ``k.one``'s lanes, saturated.

    ``t`` lanes hold ``sample + 3 * 2**15`` in their low 18 bits (above that:
    the next lane's bits), so bits 16-17 are 1 when in range, 0 when below
    -32768 and 2 when above 32767.
    """
    flags = t & k.flag_bits
    if flags == k.in_range:  # the usual case: nothing to saturate
        return t & k.low16
    ok = ((flags >> 16) & k.one) * 0xFFFF
    return (t & ok) | ((flags >> 17) & k.one) * 0xFFFF


class Upsampler8kTo16k:
    """Stateful 8 kHz -> 16 kHz PCM16 resampler for one stream direction."""

    __slots__ = ("_hist",)

    def __init__(self) -> None:
        self._hist = _IDLE_UP

    def process(self, pcm: bytes) -> bytes:
        """Return the 16 kHz samples for the 8 kHz ``pcm`` (twice as many).

        Raises:
            ValueError: ``pcm`` has an odd number of bytes.
        """
        check_pcm16(pcm)
        n = len(pcm) >> 1
        if not n:
            return b""
        k = _lanes(n)
        spread = bytearray(4 * n)  # one sample per 32-bit lane
        spread[0::4] = pcm[0::2]
        spread[1::4] = pcm[1::2]
        u = ((int.from_bytes(spread, "little") ^ k.sign) << (_LANE * _HIST)) | self._hist
        self._hist = u >> (_LANE * n)
        fir = _clamp((u * _UP_POLY + k.offset) >> _SHIFT, k)
        # The odd output phase is the input delayed by 11 samples (the 0.5 tap).
        held = (u >> (_LANE * _HALF_TAPS - 16)) & k.high16
        return ((fir | held) ^ k.sign2).to_bytes(4 * n, "little")


class Downsampler16kTo8k:
    """Stateful 16 kHz -> 8 kHz PCM16 resampler for one stream direction.

    An odd trailing sample is held back until the next call (its partner
    decides the output), so any split of a stream gives the same result.
    """

    __slots__ = ("_hist", "_pending")

    def __init__(self) -> None:
        self._hist = _IDLE_DOWN
        self._pending = b""

    def process(self, pcm: bytes) -> bytes:
        """Return the 8 kHz samples for the 16 kHz ``pcm`` (half as many).

        Raises:
            ValueError: ``pcm`` has an odd number of bytes.
        """
        check_pcm16(pcm)
        data = self._pending + pcm if self._pending else pcm
        cut = len(data) & ~3
        if cut != len(data):
            self._pending, data = bytes(data[cut:]), data[:cut]
        else:
            self._pending = b""
        n = cut >> 2
        if not n:
            return b""
        k = _lanes(n)
        # One lane per input pair: even sample in the low half, odd in the high.
        u = ((int.from_bytes(data, "little") ^ k.sign2) << (_LANE * _HIST)) | self._hist
        self._hist = u >> (_LANE * n)
        even, odd = u & k.wide_low16, (u >> 16) & k.wide_low16
        t = even * _DOWN_POLY + (odd << (_LANE * _HALF_TAPS + FRACTION_BITS - 1)) + k.offset
        lanes = (_clamp(t >> _SHIFT, k) ^ k.sign).to_bytes(4 * n, "little")
        out = bytearray(2 * n)  # keep the low half of every 32-bit lane
        out[0::2] = lanes[0::4]
        out[1::2] = lanes[1::4]
        return bytes(out)


def upsample_8k_to_16k(pcm: bytes) -> bytes:
    """Resample a whole 8 kHz PCM16 buffer to 16 kHz (a fresh :class:`Upsampler8kTo16k`)."""
    return Upsampler8kTo16k().process(pcm)


def downsample_16k_to_8k(pcm: bytes) -> bytes:
    """Resample a whole 16 kHz PCM16 buffer to 8 kHz (a fresh :class:`Downsampler16kTo8k`).

    A final odd sample is dropped: it would need its successor.
    """
    return Downsampler16kTo8k().process(pcm)


# -- 24 kHz -> 8 kHz ------------------------------------------------------------

_TAPS_24K = 73
_CUTOFF_24K = 4000 / 24000  # cycles per sample
_KAISER_BETA_24K = 5.65
_CENTRE_24K = (_TAPS_24K - 1) // 2
#: Group delay of :class:`Downsampler24kTo8k`, in 24 kHz samples.
GROUP_DELAY_24K = _CENTRE_24K


def _design_lowpass_24k() -> tuple[int, ...]:
    """The 73 Q14 taps: Kaiser-windowed sinc at 4 kHz, DC gain exactly 1 (the centre absorbs rounding)."""
    one = 1 << FRACTION_BITS
    taps = []
    for i in range(_TAPS_24K):
        k = i - _CENTRE_24K
        ideal = 2 * _CUTOFF_24K if k == 0 else math.sin(2 * math.pi * _CUTOFF_24K * k) / (math.pi * k)
        window = _bessel_i0(_KAISER_BETA_24K * math.sqrt(1.0 - (k / _CENTRE_24K) ** 2)) / _bessel_i0(_KAISER_BETA_24K)
        taps.append(round(one * ideal * window))
    taps[_CENTRE_24K] += one - sum(taps)
    return tuple(taps)


#: The 24 kHz anti-aliasing low-pass, Q14, 73 taps (index 36 is the centre).
LOWPASS_24K_TAPS = _design_lowpass_24k()
assert sum(LOWPASS_24K_TAPS) == 1 << FRACTION_BITS
# Polyphase: y[t] = sum_r sum_k h[3k + r] * x[3(t - k) + 2 - r], so each phase r is a
# plain convolution of every third input sample with every third tap, at the output rate.
_PHASE_TAPS_24K = tuple(LOWPASS_24K_TAPS[r::3] for r in range(3))
_POLYS_24K = tuple(sum(tap << (_LANE * k) for k, tap in enumerate(taps)) for taps in _PHASE_TAPS_24K)
_HIST_24K = len(_PHASE_TAPS_24K[0]) - 1  # lanes of history per phase (24)
_SHIFT_24K = _LANE * _HIST_24K + FRACTION_BITS
_IDLE_24K = 0x8000 * int.from_bytes(b"\x01\x00\x00\x00" * _HIST_24K, "little")
#: Where phase r's samples start in a frame's bytes (x[3m + 2 - r]: byte 6m + 4 - 2r).
_PHASE_BYTE = (4, 2, 0)
assert (_LANE_OFFSET + 0xFFFF * sum(t for t in LOWPASS_24K_TAPS if t < 0) >= 0
        and _LANE_OFFSET + 0xFFFF * sum(t for t in LOWPASS_24K_TAPS if t > 0) < 1 << _LANE
        and sum(map(abs, LOWPASS_24K_TAPS)) < 3 << FRACTION_BITS)


@lru_cache(maxsize=32)
def _offset_24k(n: int) -> int:
    return int.from_bytes(b"\x01\x00\x00\x00" * (n + _HIST_24K), "little") * _LANE_OFFSET


class Downsampler24kTo8k:
    """Stateful 24 kHz -> 8 kHz PCM16 resampler (anti-aliased) for one stream direction.

    Up to two trailing samples wait for the rest of their triple, so any split
    of a stream gives the same result.
    """

    __slots__ = ("_hist", "_pending")

    def __init__(self) -> None:
        self._hist = [_IDLE_24K, _IDLE_24K, _IDLE_24K]
        self._pending = b""

    def process(self, pcm: bytes) -> bytes:
        """Return the 8 kHz samples for the 24 kHz ``pcm`` (a third as many).

        Raises:
            ValueError: ``pcm`` has an odd number of bytes.
        """
        check_pcm16(pcm)
        data = self._pending + pcm if self._pending else pcm
        cut = len(data) - len(data) % 6
        self._pending, data = bytes(data[cut:]), data[:cut]
        n = cut // 6  # output samples
        if not n:
            return b""
        k = _lanes(n)
        acc = _offset_24k(n)
        spread = bytearray(4 * n)
        for r in range(3):
            at = _PHASE_BYTE[r]
            spread[0::4] = data[at::6]
            spread[1::4] = data[at + 1::6]
            u = ((int.from_bytes(spread, "little") ^ k.sign) << (_LANE * _HIST_24K)) | self._hist[r]
            self._hist[r] = u >> (_LANE * n)
            acc += u * _POLYS_24K[r]
        lanes = (_clamp(acc >> _SHIFT_24K, k) ^ k.sign).to_bytes(4 * n, "little")
        out = bytearray(2 * n)
        out[0::2] = lanes[0::4]
        out[1::2] = lanes[1::4]
        return bytes(out)


def downsample_24k_to_8k(pcm: bytes) -> bytes:
    """Resample a whole 24 kHz PCM16 buffer to 8 kHz (a fresh :class:`Downsampler24kTo8k`)."""
    return Downsampler24kTo8k().process(pcm)
