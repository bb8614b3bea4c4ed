"""Real server processes for the cluster and workers tests: started on port 0, read from their JSON logs.

Separate from ``tests/test_serve_process.py``'s helper because these tests
run several processes at once, wait for *any* log event (not only
``server.listening``), and run the ``twibridge calls`` CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import Any, Callable

import trio

from support import TOKEN, post_signed

VOICE_FORM = {"AccountSid": "AC" + "0" * 32, "From": "+15550001", "To": "+15550002"}


def base_env(**extra: str) -> dict[str, str]:
    """This environment minus any TWIBRIDGE_* of the developer's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIBRIDGE_")}
    env.update({"TWIBRIDGE_TWILIO_AUTH_TOKEN": TOKEN, "TWIBRIDGE_LOG_LEVEL": "info"}, **extra)
    return env


class ServerProcess:
    """``twibridge serve`` (or ``python -m twibridge.server.workers``) on 127.0.0.1 port 0."""

    def __init__(self, env: dict[str, str], args: list[str] | None = None) -> None:
        self.env = env
        self.args = args or [sys.executable, "-m", "twibridge", "serve", "--host", "127.0.0.1", "--port", "0"]
        self.url = ""
        self.lines: list[dict[str, Any]] = []
        self.proc: trio.Process | None = None
        self._changed = trio.Event()
        self._eof = False

    async def start(self, nursery: trio.Nursery, timeout: float = 20) -> ServerProcess:
        self.proc = await trio.lowlevel.open_process(self.args, env=self.env, stderr=subprocess.PIPE)
        nursery.start_soon(self._read_log)
        line = await self.wait_for(lambda l: l.get("event") == "server.listening", timeout)
        self.url = line["url"]
        return self

    async def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        buf = b""
        async for chunk in self.proc.stderr:
            buf += chunk
            *complete, buf = buf.split(b"\n")
            for raw in complete:
                try:
                    line = json.loads(raw)
                except ValueError:
                    line = {"event": "raw", "text": raw.decode(errors="replace")}
                self.lines.append(line)
            self._changed.set()
            self._changed = trio.Event()
        await self.proc.stderr.aclose()
        self._eof = True
        self._changed.set()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10,
                       count: int = 1) -> dict[str, Any]:
        """The ``count``-th log line matching ``pred`` (waits for it; on timeout, says what the log had)."""
        with trio.move_on_after(timeout):
            while True:
                hits = [line for line in self.lines if pred(line)]
                if len(hits) >= count:
                    return hits[count - 1]
                if self._eof:
                    raise AssertionError(f"process exited: {self.lines[-20:]}")
                with trio.move_on_after(0.5):
                    await self._changed.wait()
        raise AssertionError(f"no such log line within {timeout:g}s; last lines: {self.lines[-20:]}")

    async def calls_started(self, n: int) -> None:
        """Until the log says ``n`` calls started (each logs ``call.started`` once it is live)."""
        await self.wait_for(lambda line: line.get("event") == "call.started", count=n)

    async def drain(self) -> None:
        """SIGTERM, then wait until the server says it is draining."""
        self.signal(signal.SIGTERM)
        await self.wait_for(lambda line: line.get("event") == "server.draining")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait for the exit code (SIGKILL if it overstays)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        with trio.move_on_after(timeout):
            return await self.proc.wait()
        self.proc.kill()
        return await self.proc.wait()


async def voice_verbs(url: str, call_sid: str) -> list[str]:
    """POST the signed webhook; the TwiML verbs answered (Connect = served, Say+Hangup = busy)."""
    resp = await post_signed(url, "/voice", {**VOICE_FORM, "CallSid": call_sid})
    assert resp.status_code == 200, resp.text
    return [child.tag for child in ET.fromstring(resp.text)]


async def run_calls_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``twibridge calls ARGS`` as a process: (exit code, stdout, stderr)."""
    result = await trio.run_process([sys.executable, "-m", "twibridge", "calls", *args], env=env,
                                    capture_stdout=True, capture_stderr=True, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()
