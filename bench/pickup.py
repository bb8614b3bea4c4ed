"""``--only pickup``: from the stream's ``start`` to the first audio the caller hears, per provider fake.

Issue #21's "no dead air at pickup".  For each provider fake (the embedded
echo agent, the fake OpenAI Realtime server, the fake Gemini Live server) a
real ``twibridge serve`` takes a few calls from ``twibridge simulate-call
--server`` (the caller side: its report's ``pickup_to_audio_ms`` is measured
where the caller is), once as configured out of the box and once with
``[calls] greeting_sound`` — the bridge's own opening, played the instant
the stream starts while the agent still connects.  Without it the caller
waits for the agent's first reply: with the fakes, the echo of the caller's
own first words.  Calls run one after another (pickup is not a load figure).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from typing import Any

import trio

from bench import report
from bench.procs import PY, ServerProcess

#: The caller: a short spoken line (tests/fixtures, 8 kHz μ-law).
CALLER_WAV = "tests/fixtures/audio/hello_22k_pcm16.wav"
#: The greeting sound played by the bridge (any WAV; the same line serves).
GREETING_WAV = "tests/fixtures/audio/order_status_8k_mulaw.wav"
PROVIDERS = ("twibridge", "twibridge-openai", "twibridge-gemini")


async def one_call(url: str, env: dict[str, str], workdir: str, n: int) -> float | None:
    out = os.path.join(workdir, f"call-{n}.json")
    proc = await trio.run_process([PY, "-m", "twibridge", "simulate-call", CALLER_WAV, "--server", url,
                                   "--report", out, "--quiet", "--tail", "1.5", "--timeout", "30"],
                                  env=env, check=False, capture_stdout=True, capture_stderr=True)
    if proc.returncode not in (0, 1) or not os.path.exists(out):
        return None
    with open(out) as fh:
        value = json.load(fh).get("pickup_to_audio_ms")
    return float(value) if isinstance(value, (int, float)) else None


async def measure(kind_name: str, greeting: bool, calls: int) -> dict[str, Any]:
    from bench.run import kinds

    kind = kinds()[kind_name]
    async with trio.open_nursery() as nursery:
        extra: list[ServerProcess] = []
        try:
            env = dict(kind.env)
            if kind.before is not None:
                add, extra = await kind.before(nursery)
                env.update(add)
            if greeting:
                env["TWIBRIDGE_CALLS_GREETING_SOUND"] = os.path.abspath(GREETING_WAV)
            srv = ServerProcess(kind.argv, env, kind_name)
            extra.append(srv)
            await srv.start(nursery)
            values: list[float] = []
            with tempfile.TemporaryDirectory() as workdir:
                for n in range(calls):
                    with trio.move_on_after(60):
                        value = await one_call(srv.url, env, workdir, n)
                        if value is not None:
                            values.append(value)
        finally:
            for p in extra:
                await p.stop()
    return {"server": kind_name, "greeting_sound": greeting, "calls": calls, "measured": len(values),
            "pickup_ms": values}


async def section(quick: bool) -> list[dict[str, Any]]:
    calls = 2 if quick else 5
    return [await measure(k, g, calls) for k in PROVIDERS for g in (False, True)]


def pickup_table(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows:
        v = sorted(r["pickup_ms"])
        body.append([r["server"], "yes" if r["greeting_sound"] else "no", f"{r['measured']}/{r['calls']}",
                     min(v) if v else None, statistics.median(v) if v else None, max(v) if v else None])
    return report.table(["server (provider fake)", "greeting_sound", "calls", "pickup min ms", "pickup p50 ms",
                         "pickup max ms"], body)
