"""Child processes of a bench run: servers read from their JSON logs, and the driver.

Every process started here is killed by :meth:`ServerProcess.stop` (SIGTERM,
then SIGKILL after a bound) in a ``finally``, so an interrupted run leaves
nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any, Callable

import trio

PY = sys.executable
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def bench_env(**extra: str) -> dict[str, str]:
    """This environment minus any TWIBRIDGE_*, plus bench defaults and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIBRIDGE_")}
    env.update({
        "TWIBRIDGE_TWILIO_VALIDATE_SIGNATURES": "false",  # loopback only; the driver does not sign
        "TWIBRIDGE_SERVER_MAX_CALLS": "5000",
        "TWIBRIDGE_LOG_LEVEL": "info",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    env.update(extra)
    return env


class ServerProcess:
    """A server that logs JSON lines on stderr, ``server.listening`` carrying its URL."""

    def __init__(self, argv: list[str], env: dict[str, str], label: str = "") -> None:
        self.argv, self.env, self.label = argv, env, label
        self.url = ""
        self.lines: list[dict[str, Any]] = []
        self.proc: trio.Process | None = None
        self._changed = trio.Event()
        self._eof = False
        self.started_at = 0.0
        self.ready_s = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1).rstrip("/") + "/media-stream"

    async def start(self, nursery: trio.Nursery) -> ServerProcess:
        self.started_at = trio.current_time()
        self.proc = await trio.lowlevel.open_process(self.argv, env=self.env, stderr=subprocess.PIPE,
                                                     stdout=subprocess.DEVNULL, start_new_session=True)
        nursery.start_soon(self._read_log)
        line = await self.wait_for(lambda l: l.get("event") == "server.listening", START_TIMEOUT_S)
        self.ready_s = trio.current_time() - self.started_at
        self.url = line["url"]
        return self

    async def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        buf = b""
        try:
            async for chunk in self.proc.stderr:
                buf += chunk
                *complete, buf = buf.split(b"\n")
                for raw in complete:
                    try:
                        line = json.loads(raw)
                    except ValueError:
                        line = {"event": "raw", "text": raw.decode(errors="replace")}
                    if isinstance(line, dict):
                        self.lines.append(line)
                self._changed.set()
                self._changed = trio.Event()
        finally:
            self._eof = True
            self._changed.set()

    def events(self, name: str, sid_prefix: str = "") -> list[dict[str, Any]]:
        return [l for l in self.lines if l.get("event") == name and str(l.get("call_sid", "")).startswith(sid_prefix)]

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float, count: int = 1) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                hits = [l for l in self.lines if pred(l)]
                if len(hits) >= count:
                    return hits[count - 1]
                if self._eof:
                    raise RuntimeError(f"{self.label or self.argv} exited: {self.lines[-10:]}")
                with trio.move_on_after(0.5):
                    await self._changed.wait()
        raise AssertionError("unreachable: fail_after raises")  # for mypy: its __exit__ may return True

    async def stop(self) -> int | None:
        """SIGTERM the process group; SIGKILL it if it overstays."""
        if self.proc is None:
            return None
        with trio.CancelScope(shield=True):
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            with trio.move_on_after(STOP_TIMEOUT_S):
                return await self.proc.wait()
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return await self.proc.wait()
        raise AssertionError("unreachable")  # for mypy: a shielded scope's __exit__ may return True


async def run_driver(url: str, calls: int, *, pid: int, prefix: str, duration_s: float, ramp_s: float,
                     script: str = "echo", barge_every_s: float = 0.0, aux_pid: int = 0) -> dict[str, Any]:
    """Run ``bench.driver`` as its own process; its JSON summary."""
    argv = [PY, "-m", "bench.driver", "--url", url, "--calls", str(calls), "--pid", str(pid),
            "--prefix", prefix, "--duration-s", str(duration_s), "--ramp-s", str(ramp_s), "--script", script,
            "--barge-every-s", str(barge_every_s), "--aux-pid", str(aux_pid)]
    with trio.fail_after(ramp_s + duration_s + 120):
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False,
                                      env=bench_env())
    if done.returncode != 0:
        raise RuntimeError(f"driver failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result
