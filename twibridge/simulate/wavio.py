"""WAV ↔ 8 kHz μ-law for the simulator: re-exported from :mod:`twibridge.audio.wavfile`.

The converter moved to ``audio/`` when the bridge itself started playing
WAV files (``[calls] greeting_sound``); this import path stays for
``twibridge.simulate``'s users.
"""

from __future__ import annotations

from twibridge.audio.wavfile import (
    MAX_DURATION_S, TARGET_RATE, AudioFileError, CallerAudio, load_caller_audio, resample, to_pcm16,
    write_pcm16_wav,
)

__all__ = ["MAX_DURATION_S", "TARGET_RATE", "AudioFileError", "CallerAudio", "load_caller_audio", "resample",
           "to_pcm16", "write_pcm16_wav"]
