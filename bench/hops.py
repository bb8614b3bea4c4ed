"""How many passes of Trio's run loop a reply's audio waits out inside ``twibridge serve`` (issue #16).

Under load one pass of the run loop lasts as long as every call's ready
work, so each pass between the agent's socket and Twilio's is milliseconds
of first-audio latency at 50 calls (docs/benchmarks.md, "Hops on the reply
path").  The count itself does not depend on load or on the machine, so one
call measures it exactly:

* ``bench.fake_agent`` (``provider = "websocket"``) speaks replies at the
  chosen pacing; ``bench.driver --script agent`` is the caller;
* ``twibridge serve`` runs under :func:`serve_probed`, which counts passes
  with a Trio instrument (``before_io_wait``, added at the process's first
  socket read) and notes the pass in which the agent socket's
  ``receive_some`` returned audio and the pass in which the Twilio socket's
  ``send_all`` wrote the next ``media``.

``python -m bench.hops [--pacing realtime] [--duration-s 10]`` prints how
many messages took how many passes.  (A message right after a reply's end
pairs with the next reply's audio: those few are the long tail.)
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from bench.procs import PY, ServerProcess, bench_env, run_driver

OUT_ENV = "BENCH_HOPS_OUT"
AGENT_PORT_ENV = "BENCH_HOPS_AGENT_PORT"


class _Probe(trio.abc.Instrument):
    """Pass counter plus the pairing of agent audio in with ``media`` out (one call)."""

    def __init__(self, agent_port: int) -> None:
        self.agent_port = agent_port
        self.passes = 0
        self.arrived: int | None = None  # the pass of the oldest agent data not yet written on
        self.hops: Counter[int] = Counter()
        self.installed = False

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1

    def received(self, stream: trio.SocketStream, data: bytes) -> None:
        if data and self.arrived is None and _port(stream, peer=True) == self.agent_port:
            self.arrived = self.passes

    def sending(self, data: Any) -> None:
        if self.arrived is not None and b'"media"' in bytes(data[:40]):
            self.hops[self.passes - self.arrived] += 1
            self.arrived = None


def _port(stream: trio.SocketStream, peer: bool) -> int:
    try:
        name = stream.socket.getpeername() if peer else stream.socket.getsockname()
    except OSError:
        return -1
    return int(name[1])


def serve_probed(argv: list[str]) -> None:
    """Run the twibridge CLI (``argv``) with the probe in its process; write the counts at exit."""
    probe = _Probe(int(os.environ[AGENT_PORT_ENV]))
    receive_some, send_all = trio.SocketStream.receive_some, trio.SocketStream.send_all

    async def counted_receive(self: trio.SocketStream, max_bytes: int | None = None) -> bytes:
        if not probe.installed:  # the first read of all (a request): inside trio.run, before any agent audio
            trio.lowlevel.add_instrument(probe)
            probe.installed = True
        data = await receive_some(self, max_bytes)
        probe.received(self, data)
        return data

    async def counted_send(self: trio.SocketStream, data: bytes | bytearray | memoryview) -> None:
        probe.sending(data)  # the write happens inside: its pass is this one
        await send_all(self, data)

    trio.SocketStream.receive_some = counted_receive  # type: ignore[method-assign]
    trio.SocketStream.send_all = counted_send  # type: ignore[method-assign]

    def write() -> None:
        Path(os.environ[OUT_ENV]).write_text(json.dumps(sorted(probe.hops.items())))

    atexit.register(write)
    from twibridge.cli import main

    sys.argv = ["twibridge", *argv]
    main()


async def measure(pacing: str, duration_s: float) -> Counter[int]:
    """Passes per message for one call against ``bench.fake_agent --pacing pacing``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "hops.json"
        async with trio.open_nursery() as nursery:
            agent = await ServerProcess([PY, "-m", "bench.fake_agent", "--pacing", pacing], bench_env(),
                                        "fake-agent").start(nursery)
            port = agent.url.rsplit(":", 1)[1].rstrip("/")
            env = bench_env(TWIBRIDGE_AGENT_PROVIDER="websocket",
                            TWIBRIDGE_AGENT_WEBSOCKET_URL=f"ws://127.0.0.1:{port}/agent",
                            **{OUT_ENV: str(out), AGENT_PORT_ENV: port})
            serve = await ServerProcess([PY, "-m", "bench.hops", "--serve-probed", "serve", "--host", "127.0.0.1",
                                         "--port", "0"], env, "twibridge-probed").start(nursery)
            try:
                await run_driver(serve.ws_url, 1, pid=serve.pid, prefix="40", duration_s=duration_s, ramp_s=0.1,
                                 script="agent")
            finally:
                await serve.stop()
                await agent.stop()
                nursery.cancel_scope.cancel()
        return Counter({int(k): int(v) for k, v in json.loads(out.read_text())})


def table(pacing: str, hops: Counter[int]) -> str:
    total = sum(hops.values())
    rows = [f"## Passes of the run loop: agent's socket → `media` on Twilio's (`{pacing}` agent, 1 call)", "",
            "| passes | messages | share |", "|---:|---:|---:|"]
    rows += [f"| {k} | {n} | {n / total:.1%} |" for k, n in sorted(hops.items())]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve-probed"]:
        serve_probed(argv[1:])
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.hops", description=__doc__.split("\n\n")[0])
    p.add_argument("--pacing", choices=["realtime", "bursty", "big"], default="realtime")
    p.add_argument("--duration-s", type=float, default=10.0)
    args = p.parse_args(argv)
    hops = trio.run(measure, args.pacing, args.duration_s)
    print(table(args.pacing, hops))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
