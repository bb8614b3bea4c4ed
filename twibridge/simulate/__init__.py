"""A faithful local Twilio: place simulated phone calls against a bridge.

The library behind ``twibridge simulate-call`` and the integration tests
and benchmarks:

* :func:`load_caller_audio` — any common WAV → 8 kHz μ-law (once, up front);
* :func:`simulate_call` — one call over real sockets, as Twilio places it;
* :class:`PlaybackBuffer` — Twilio's outbound playback rules, sans-IO;
* :func:`build_report` — the ``report.json`` dict (turns, barge-ins, …).

Heavier pieces are imported lazily so ``import twibridge.simulate`` stays
cheap for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twibridge.simulate.playback import PlaybackBuffer, Played, Progress

if TYPE_CHECKING:
    from twibridge.simulate.caller import simulate_call
    from twibridge.simulate.record import CallOptions, CallResult, Outcome
    from twibridge.simulate.report import REPORT_KEYS, Segment, build_report, render_report, speech_segments
    from twibridge.simulate.wavio import AudioFileError, CallerAudio, load_caller_audio, write_pcm16_wav

_LAZY = {
    "CallOptions": "record", "CallResult": "record", "Outcome": "record", "simulate_call": "caller",
    "REPORT_KEYS": "report", "Segment": "report", "build_report": "report", "render_report": "report",
    "speech_segments": "report",
    "AudioFileError": "wavio", "CallerAudio": "wavio", "load_caller_audio": "wavio", "write_pcm16_wav": "wavio",
}

__all__ = ["PlaybackBuffer", "Played", "Progress", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'twibridge.simulate' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"twibridge.simulate.{module}"), name)
    globals()[name] = value
    return value
