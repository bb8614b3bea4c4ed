"""twibridge.call.sounds: every configured sound loads once, or names its key."""

from __future__ import annotations

import wave
from pathlib import Path

from support import tone
from twibridge.audio.g711 import ulaw_to_pcm16
from twibridge.call.sounds import load_sounds, sound_problems
from twibridge.config import build_config


def write_wav(path: Path, ms: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(ulaw_to_pcm16(tone(ms)))
    return path


def test_hold_and_greeting_sounds_load_as_ulaw(tmp_path: Path) -> None:
    cfg = build_config({"calls": {"greeting_sound": str(write_wav(tmp_path / "hi.wav", 200))},
                        "transfer": {"hold_sound": str(write_wav(tmp_path / "hold.wav", 300))}})
    sounds = load_sounds(cfg)
    assert {k: len(v) for k, v in sounds.items()} == {"greeting": 1600, "hold": 2400}


def test_an_unreadable_hold_sound_is_a_config_problem_naming_its_key(tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_bytes(b"RIFF....not a wav")
    cfg = build_config({"transfer": {"hold_sound": str(tmp_path / "bad.wav")}})
    (line,) = sound_problems(cfg)
    assert line.startswith("transfer.hold_sound: cannot read")
    assert sound_problems(build_config({})) == []
