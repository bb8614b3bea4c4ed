"""WAV files ↔ 8 kHz μ-law, read once per file (a caller recording, the bridge's own sounds).

Twilio sends the bridge 8 kHz μ-law, so ``simulate-call`` converts whatever
WAV the user has (PCM 8/16/24/32-bit, float, μ-law, A-law; 8-48 kHz; mono
or stereo) to exactly that *before* the call starts: the per-frame loop then
only slices bytes.  libsndfile (via soundfile) decodes every WAV flavour;
numpy does the downmix and a windowed-sinc polyphase resampler (no scipy).

Every way a file can be unusable becomes one :class:`AudioFileError` whose
``reason`` is a short phrase fit for ``cannot read FILE: <reason>``.

It lives in ``audio`` (not ``simulate``) because the bridge reads WAVs too:
``[tools] thinking_sound``, ``[calls] greeting_sound``.  ``twibridge.simulate.wavio`` re-exports it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from twibridge.audio.g711 import pcm16_to_ulaw

TARGET_RATE = 8000
MIN_RATE = 8000
MAX_RATE = 48000
#: Longer than any call Twilio allows (4 h) is certainly a mistake; one hour
#: keeps the decoded float buffer under ~700 MB even at 48 kHz stereo.
MAX_DURATION_S = 3600.0
MAX_CHANNELS = 8
#: WAV containers libsndfile reports (RIFF, WAVE_FORMAT_EXTENSIBLE, RF64).
WAV_FORMATS = frozenset({"WAV", "WAVEX", "RF64"})
#: Resampler quality: zero crossings of the sinc on each side, Kaiser β,
#: and the passband edge as a fraction of the output Nyquist (3.8 kHz).
SINC_ZERO_CROSSINGS = 16
KAISER_BETA = 8.6
ROLLOFF = 0.95
#: Outputs computed per vectorised block (bounds the temporary tap matrix).
RESAMPLE_BLOCK = 4096


class AudioFileError(Exception):
    """The caller recording cannot be used; ``reason`` says why, in a phrase."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CallerAudio:
    """A recording converted for the call, plus what it was."""

    ulaw: bytes  # 8 kHz mono μ-law, the call's inbound audio
    source_rate: int
    source_channels: int
    source_subtype: str  # libsndfile's name: PCM_16, ULAW, FLOAT, ...

    @property
    def duration_ms(self) -> float:
        return len(self.ulaw) / (TARGET_RATE // 1000)


def load_caller_audio(path: str | Path) -> CallerAudio:
    """Read a WAV file and convert it to 8 kHz mono μ-law.

    Raises:
        AudioFileError: missing, unreadable, empty, truncated, not a WAV,
            an unsupported rate or channel count, no samples, or too long.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise AudioFileError("no such file") from None
    except OSError as exc:
        raise AudioFileError(exc.strerror or str(exc)) from None
    if path.is_dir():
        raise AudioFileError("is a directory")
    if size == 0:
        raise AudioFileError("empty file")
    _check_riff(path, size)
    try:
        with sf.SoundFile(str(path)) as f:
            fmt, subtype, rate, channels, frames = f.format, f.subtype, f.samplerate, f.channels, f.frames
            if fmt not in WAV_FORMATS:
                raise AudioFileError(f"not a WAV file (it is {fmt})")
            if not MIN_RATE <= rate <= MAX_RATE:
                raise AudioFileError(f"unsupported sample rate {rate} Hz (need {MIN_RATE}-{MAX_RATE} Hz)")
            if not 1 <= channels <= MAX_CHANNELS:
                raise AudioFileError(f"unsupported channel count {channels}")
            if frames <= 0:
                raise AudioFileError("no audio samples")
            if frames / rate > MAX_DURATION_S:
                raise AudioFileError(f"too long ({frames / rate:.0f} s, limit {MAX_DURATION_S:.0f} s)")
            data = f.read(dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        raise AudioFileError(_libsndfile_reason(exc)) from None
    except (OSError, RuntimeError) as exc:
        raise AudioFileError(str(exc) or type(exc).__name__) from None
    if data.shape[0] == 0:
        raise AudioFileError("no audio samples")
    mono = data.mean(axis=1, dtype=np.float64) if channels > 1 else data[:, 0].astype(np.float64)
    pcm = to_pcm16(resample(mono, rate, TARGET_RATE))
    return CallerAudio(pcm16_to_ulaw(pcm), rate, channels, subtype)


def _check_riff(path: Path, size: int) -> None:
    """Catch a truncated header or data chunk, which libsndfile tolerates silently."""
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12:
            if head and b"RIFF".startswith(head[:4]):
                raise AudioFileError("truncated WAV header")
            raise AudioFileError("not a WAV file")
        if head[:4] != b"RIFF":
            return  # RF64/RIFX/other: libsndfile decides
        if head[8:12] != b"WAVE":
            raise AudioFileError("not a WAV file (RIFF but not WAVE)")
        pos = 12
        # Bounded: each iteration advances by ≥ 8 bytes within the file.
        while pos + 8 <= size:
            fh.seek(pos)
            chunk_id, chunk_len = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                # 0 and 0xFFFFFFFF mean "unknown" (written by a streaming encoder).
                if chunk_len not in (0, 0xFFFFFFFF) and pos + 8 + chunk_len > size:
                    have = size - pos - 8
                    raise AudioFileError(f"truncated: data chunk declares {chunk_len} bytes, file has {have}")
                return
            pos += 8 + chunk_len + (chunk_len & 1)
        raise AudioFileError("truncated WAV header (no data chunk)")


def _libsndfile_reason(exc: sf.LibsndfileError) -> str:
    msg = (exc.error_string or str(exc)).strip().rstrip(".")
    low = msg.lower()
    if "format not recognised" in low or "unknown format" in low:
        return "not a WAV file (format not recognised)"
    if "premature" in low or "short" in low or "truncat" in low:
        return f"truncated ({msg})"
    return msg or "unreadable"


def resample(x: npt.NDArray[np.float64], src_rate: int, dst_rate: int) -> npt.NDArray[np.float64]:
    """Windowed-sinc polyphase resampling by the exact rational ratio.

    Each output sample n sits at input time n·src/dst; with ``up``/``down``
    the reduced ratio only ``up`` distinct fractional offsets exist, so the
    filter bank has ``up`` rows, built once.  The low-pass sits at ROLLOFF of
    the lower Nyquist, so downsampling does not alias.  Every row is
    normalised to unity DC gain.
    """
    if src_rate == dst_rate:
        return x
    g = math.gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    cutoff = ROLLOFF * 0.5 * min(src_rate, dst_rate) / src_rate  # cycles per input sample
    half = int(math.ceil(SINC_ZERO_CROSSINGS / (2 * cutoff)))
    offsets = np.arange(-half + 1, half + 1, dtype=np.float64)  # taps relative to floor(t)
    frac = np.arange(up, dtype=np.float64)[:, None] / up
    d = offsets[None, :] - frac  # distance of each tap from the output instant
    window = np.kaiser(2 * half + 1, KAISER_BETA)
    # Sample the continuous Kaiser window at the (fractional) distances.
    win = np.interp(d, np.arange(-half, half + 1, dtype=np.float64), window, left=0.0, right=0.0)
    bank = 2 * cutoff * np.sinc(2 * cutoff * d) * win
    bank /= bank.sum(axis=1, keepdims=True)

    n_out = (len(x) * up) // down
    padded = np.concatenate([np.zeros(half), x, np.zeros(half + 1)])
    out = np.empty(n_out, dtype=np.float64)
    taps = np.arange(2 * half)
    for start in range(0, n_out, RESAMPLE_BLOCK):
        n = np.arange(start, min(start + RESAMPLE_BLOCK, n_out))
        base = (n * down) // up
        phase = (n * down) % up
        # padded index of input (base + offset) is base + offset + half
        idx = base[:, None] + 1 + taps[None, :]
        out[start : start + len(n)] = np.einsum("ij,ij->i", padded[idx], bank[phase])
    return out


def to_pcm16(x: npt.NDArray[np.float64]) -> bytes:
    """Float samples in [-1, 1) to little-endian PCM16, clipped."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2").tobytes()


def write_pcm16_wav(path: str | Path, pcm: bytes, rate: int = TARGET_RATE) -> None:
    """Write mono little-endian PCM16 as a plain WAV file."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
    sf.write(str(path), samples, rate, subtype="PCM_16", format="WAV")
