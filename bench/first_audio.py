"""The first-audio section of ``python -m bench`` (issue #16): how long the agent's voice waits in the bridge.

For each agent pacing of :mod:`bench.fake_agent` and each N, the direct
forwarder (:mod:`bench.forwarder`) and ``twibridge serve`` with
``provider = "websocket"`` are measured in turn against the same kind of
fake agent, the driver's callers silent (``--script agent``).  The table is
:func:`bench.report.first_audio_table`; the method is in ``docs/benchmarks.md``.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import trio

from bench.procs import PY, ServerProcess, bench_env
from bench.run import Kind, Plan, measure


def _fake_agent(pacing: str) -> Callable[[trio.Nursery], Awaitable[tuple[dict[str, str], list[ServerProcess]]]]:
    async def start(nursery: trio.Nursery) -> tuple[dict[str, str], list[ServerProcess]]:
        fake = ServerProcess([PY, "-m", "bench.fake_agent", "--pacing", pacing], bench_env(), f"fake-agent-{pacing}")
        await fake.start(nursery)
        url = fake.url.replace("http://", "ws://") + "/agent"
        return {"TWIBRIDGE_AGENT_PROVIDER": "websocket", "TWIBRIDGE_AGENT_WEBSOCKET_URL": url,
                "BENCH_AGENT_URL": url}, [fake]
    return start


#: The first-audio section's agents (``bench.fake_agent --pacing``) and servers.
PACINGS = {"realtime": "real time, 20 ms per message", "bursty": "100 ms per message at 2× real time",
           "big": "one message per 1 s reply"}


def first_audio_kinds(pacing: str) -> dict[str, Kind]:
    serve = [PY, "-m", "twibridge", "serve", "--host", "127.0.0.1", "--port", "0"]
    return {"forwarder": Kind([PY, "-m", "bench.forwarder"], bench_env(), before=_fake_agent(pacing)),
            "twibridge-ws": Kind(serve, bench_env(), before=_fake_agent(pacing))}


async def section(plan: Plan) -> list[dict[str, Any]]:
    rows = []
    for pacing in PACINGS:
        for n in plan.first_audio_ns:
            for name, kind in first_audio_kinds(pacing).items():
                row = await measure(name, n, plan, script="agent", kind=kind)
                row["pacing"] = pacing
                rows.append(row)
    return rows
