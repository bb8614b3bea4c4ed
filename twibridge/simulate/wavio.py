"""Caller recordings in, heard audio out: the WAV reader and writer ``simulate-call`` uses.

The code lives in :mod:`twibridge.audio.wavfile` (the bridge reads WAVs too:
``[tools] thinking_sound``, ``[calls] greeting_sound``); this module keeps the import path.
"""

from __future__ import annotations

from twibridge.audio.wavfile import (
    MAX_CHANNELS, MAX_DURATION_S, MAX_RATE, MIN_RATE, TARGET_RATE, AudioFileError, CallerAudio, load_caller_audio,
    resample, to_pcm16, write_pcm16_wav,
)

__all__ = [
    "MAX_CHANNELS", "MAX_DURATION_S", "MAX_RATE", "MIN_RATE", "TARGET_RATE", "AudioFileError", "CallerAudio",
    "load_caller_audio", "resample", "to_pcm16", "write_pcm16_wav",
]
