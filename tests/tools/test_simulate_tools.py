"""The README's try-out, as a test: example backend + reference agent (own processes) + simulate-call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from typer.testing import CliRunner

from conftest import FIXTURES
from twibridge.cli.main import app
from twibridge.webhooks import signing

ROOT = Path(__file__).resolve().parents[2]
SECRET = signing.new_secret()


@pytest.fixture
def services() -> Iterator[tuple[str, str]]:
    """(backend base URL, agent ws URL), each a real process on a free port."""
    env = {**os.environ, "TWIBRIDGE_TOOLS_SECRET": SECRET}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "examples" / "order_backend.py"), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env),
             subprocess.Popen([sys.executable, "-m", "fakes.ref_agent", "--port", "0"], cwd=ROOT / "tests",
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)]
    try:
        urls = [p.stdout.readline().rsplit(" ", 1)[-1].strip() for p in procs]  # type: ignore[union-attr]
        yield urls[0], urls[1]
    finally:
        for p in procs:
            p.terminate()
            p.wait(5)
            p.stdout.close()  # type: ignore[union-attr]


def test_simulate_call_reports_the_tool_call(services: tuple[str, str], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    backend, agent = services
    config = tmp_path / "tools.toml"
    example = (ROOT / "examples" / "tools.toml").read_text()
    config.write_text(example.replace("ws://127.0.0.1:9000/agent", agent)
                      .replace("http://127.0.0.1:8765", backend)
                      .replace('"tests/fixtures/', f'"{ROOT}/tests/fixtures/'))
    monkeypatch.setenv("TWIBRIDGE_TOOLS_SECRET", SECRET)
    report = tmp_path / "report.json"
    res = CliRunner().invoke(app, ["simulate-call", str(FIXTURES / "audio" / "hello_22k_pcm16.wav"), "--config",
                                   str(config), "--dtmf", "*@0.5", "--tail", "2", "--quiet", "--report", str(report)])
    assert res.exit_code == 0, res.output
    rep = json.loads(report.read_text())
    (tool,) = rep["tools"]
    assert (tool["name"], tool["outcome"]) == ("lookup_order", "ok")
    assert 400 <= tool["t_ms"] < 3000 and tool["duration_ms"] >= 0
