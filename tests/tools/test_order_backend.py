"""examples/order_backend.py: the documented example backend, run as its own process, called by the executor."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from twibridge.agents.base import CallInfo
from twibridge.config import ToolsConfig
from twibridge.tools.executor import Executor
from twibridge.webhooks import signing

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order_backend.py"
SECRET = signing.new_secret()


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("order_backend", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_its_verify_agrees_with_twibridges_signer() -> None:
    ob = load_example()
    body = b'{"name":"lookup_order"}'
    headers = signing.sign_headers(SECRET, body, "msg_1", time.time())
    assert ob.verify(SECRET, headers, body)
    assert not ob.verify(SECRET, headers, body + b" ")
    assert not ob.verify(signing.new_secret(), headers, body)
    assert not ob.verify(SECRET, headers, body, now=time.time() + 600)  # replayed too late


@pytest.fixture
def backend_url() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "TWIBRIDGE_TOOLS_SECRET": SECRET})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        yield line.rsplit(" ", 1)[-1].strip()
    finally:
        proc.terminate()
        proc.wait(5)
        assert proc.stdout is not None
        proc.stdout.close()


async def test_lookup_order_through_the_executor(backend_url: str) -> None:
    def cfg(secret: str) -> ToolsConfig:
        return ToolsConfig.model_validate({"secret": secret, "functions": [
            {"name": "lookup_order", "url": backend_url + "/lookup_order"}]})

    call = CallInfo(call_sid="CA1", stream_sid="MZ1")
    async with httpx.AsyncClient(timeout=None) as client:
        found = await Executor(cfg(SECRET), lambda: client).run(call, "c1", "lookup_order", '{"order_number": "42"}')
        missing = await Executor(cfg(SECRET), lambda: client).run(call, "c2", "lookup_order", '{"order_number": "7"}')
        forged = await Executor(cfg(signing.new_secret()), lambda: client).run(call, "c3", "lookup_order", "{}")
    assert found.outcome == "ok" and found.output["status"] == "shipped"
    assert missing.output["found"] is False
    assert dict(forged.output) == {"error": "the backend answered HTTP 401"}
