"""twibridge.cli.serve's operator guards (issue #23, item 15), on real `twibridge serve` processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from process_support import ServerProcess, base_env
from support import TOKEN, make_config
from twibridge.cli.serve import is_loopback, readable_secret_files

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes and signals")

SERVE = [sys.executable, "-m", "twibridge", "serve", "--port", "0"]


def test_is_loopback() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "bridge.example.com", ""))


async def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(args, env=env, capture_stdout=True, capture_stderr=True, check=False)


async def test_signatures_off_on_a_public_address_refuse_to_start() -> None:
    env = base_env(TWIBRIDGE_TWILIO_VALIDATE_SIGNATURES="false")
    refused = await run([*SERVE, "--host", "0.0.0.0"], env)
    assert refused.returncode == 2
    assert b"refusing to start" in refused.stderr and b"server.allow_unsigned_public" in refused.stderr
    # Forced on purpose, it gets past the guard: to the bind (a TEST-NET address: nothing is exposed).
    forced = await run([*SERVE, "--host", "192.0.2.1"], {**env, "TWIBRIDGE_SERVER_ALLOW_UNSIGNED_PUBLIC": "true"})
    assert forced.returncode == 1 and b"cannot serve on 192.0.2.1" in forced.stderr
    assert b"server.signatures_disabled" in forced.stderr and b"Traceback" not in forced.stderr


async def test_a_world_readable_config_file_holding_a_secret_is_a_warning(tmp_path: Path) -> None:
    config = tmp_path / "twibridge.toml"
    config.write_text(f'[twilio]\nauth_token = "{TOKEN}"\n')
    env = {k: v for k, v in base_env().items() if k != "TWIBRIDGE_TWILIO_AUTH_TOKEN"}
    seen = {}
    for mode in (0o644, 0o600):
        os.chmod(config, mode)
        sp = ServerProcess(env, [*SERVE, "--host", "127.0.0.1", "--config", str(config)])
        with trio.fail_after(40):
            async with trio.open_nursery() as nursery:
                await sp.start(nursery)
                assert await sp.stop() == 0
        seen[mode] = sp.events("server.secrets_readable")
    assert [w["file"] for w in seen[0o644]] == [f"{config} (mode 0644)"] and seen[0o600] == []
    assert TOKEN not in str(seen)


def test_the_env_file_is_checked_and_a_config_without_secrets_is_not(tmp_path: Path) -> None:
    cfg = make_config()
    env_file, plain = tmp_path / "twibridge.env", tmp_path / "plain.toml"
    env_file.write_text(f"TWIBRIDGE_TWILIO_AUTH_TOKEN={TOKEN}\n")
    plain.write_text("[server]\nport = 8080\n")
    os.chmod(env_file, 0o640)
    os.chmod(plain, 0o644)
    assert readable_secret_files(cfg, plain, env_file) == [f"{env_file} (mode 0640)"]
    os.chmod(env_file, 0o600)
    assert readable_secret_files(cfg, plain, env_file) == []
