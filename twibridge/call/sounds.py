"""The bridge's own sounds, loaded once per config (never per call).

``[calls] greeting_sound`` (and later ones, e.g. hold or thinking sounds) is
any WAV ``simulate-call`` reads, converted to 8 kHz μ-law at start; a file
that cannot be read is a config problem naming its key, found by
``validate-config`` and refused by ``serve`` — never a surprise on a call.
"""

from __future__ import annotations

from twibridge.audio.wavfile import AudioFileError, load_caller_audio
from twibridge.config import Config

#: Longest sound we keep in memory (each is played, not streamed from disk).
MAX_SOUND_S = 60.0


#: Sound name → its config key (section, key).
SOUND_KEYS = {"greeting": ("calls", "greeting_sound"), "hold": ("transfer", "hold_sound")}


def _files(config: Config) -> dict[str, tuple[str, str]]:
    """Sound name → (dotted key, path), for every sound that is set."""
    found = {}
    for name, (section, key) in SOUND_KEYS.items():
        path = getattr(getattr(config, section), key)
        if path:
            found[name] = (f"{section}.{key}", path)
    return found


def load_sounds(config: Config) -> dict[str, bytes]:
    """Every configured sound as μ-law 8 kHz.

    Raises:
        ValueError: one line per unusable file, naming the key.
    """
    sounds: dict[str, bytes] = {}
    problems = []
    for name, (key, path) in _files(config).items():
        try:
            audio = load_caller_audio(path)
        except AudioFileError as exc:
            problems.append(f"{key}: cannot read {path}: {exc.reason}")
            continue
        if len(audio.ulaw) > MAX_SOUND_S * 8000:
            problems.append(f"{key}: {path} is longer than {MAX_SOUND_S:g} s")
            continue
        sounds[name] = audio.ulaw
    if problems:
        raise ValueError("\n".join(problems))
    return sounds


def sound_problems(config: Config) -> list[str]:
    """What :func:`load_sounds` would refuse, one line per key (empty when all load)."""
    try:
        load_sounds(config)
    except ValueError as exc:
        return str(exc).splitlines()
    return []
