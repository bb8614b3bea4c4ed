"""Twilio's official Python sample as the agent-leg comparison, when you have it set up locally.

The sample (``speech-assistant-openai-realtime-api-python``, FastAPI +
uvicorn + websockets) is not part of this repository and nothing here
fetches, installs or patches it.  To include it in ``python -m bench``, set
``BENCH_SAMPLE_CMD`` to a command that starts it so that:

* it serves ``/media-stream`` on 127.0.0.1 (any port) and prints one JSON
  line ``{"event": "server.listening", "url": "http://127.0.0.1:PORT"}`` on
  stderr once it listens;
* its OpenAI connection goes to ``$BENCH_FAKE_URL`` (the bench's fake
  realtime server, set in its environment together with ``OPENAI_API_KEY``)
  instead of ``wss://api.openai.com/v1/realtime``.  The sample hard-codes
  that URL, so the command has to redirect it at run time (e.g. a launcher
  that wraps ``websockets.connect`` before importing the sample's
  ``main`` and runs ``uvicorn`` on a pre-bound loopback socket).

``docs/benchmarks.md`` says how it was done for the published figures.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

ENV = "BENCH_SAMPLE_CMD"


def note(available: bool) -> str:
    if available:
        return ("Twilio's sample sends each OpenAI delta on at once (no pacing, one mark per delta): at the caller it "
                "is never late while it keeps up, so compare its CPU per call, its reply latency and lost frames.")
    return f"Twilio's FastAPI sample: not measured in this run (set {ENV}; see bench/sample_leg.py)."


def kind() -> Any:
    cmd = os.environ.get(ENV, "").strip()
    if not cmd:
        return None
    from bench.procs import bench_env
    from bench.run import Kind, _fake_realtime

    return Kind(shlex.split(cmd), bench_env(), before=_fake_realtime, counts_at_agent=True)
