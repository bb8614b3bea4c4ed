"""The command line: help, validate-config exit codes and messages, serve refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXE = [sys.executable, "-m", "twibridge"]


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TWIBRIDGE_")}
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})}, cwd=cwd or ROOT)


def test_help_lists_the_commands() -> None:
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("serve", "validate-config", "simulate-call"):
        assert cmd in out.stdout
    for cmd in ("serve", "validate-config", "simulate-call"):
        sub = run(cmd, "--help")
        assert sub.returncode == 0 and "Usage" in sub.stdout


def test_help_does_not_import_the_server_stack() -> None:
    code = ("import sys; from twibridge.cli import app; "
            "heavy = [m for m in ('quart_trio', 'hypercorn', 'twilio.rest', 'trio_websocket') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_validate_config_ok(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[server]\nport = 9000\n[twilio]\nauth_token = "abcdefabcdef"\n')
    out = run("validate-config", str(good))
    assert (out.returncode, out.stdout.strip(), out.stderr) == (0, "ok", "")
    example = run("validate-config", str(ROOT / "config.example.toml"))
    assert example.returncode == 0 and example.stdout.strip() == "ok"
    assert "auth_token" in example.stderr  # warns: serve would refuse without a token


def test_validate_config_reports_each_problem_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nport = "abc"\nhots = "x"\n[log]\nlevel = "loud"\n')
    out = run("validate-config", str(bad))
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert f"{bad}: server.port: expected an integer 1-65535, got 'abc'" in lines
    assert f"{bad}: server.hots: unknown key" in lines
    assert any("log.level" in line for line in lines) and len(lines) == 3
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("content", ["[server\n", "\xff\xfe"])
def test_validate_config_unparseable(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(content.encode("latin-1"))
    out = run("validate-config", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr and str(bad) in out.stderr


def test_validate_config_missing_file(tmp_path: Path) -> None:
    out = run("validate-config", str(tmp_path / "nope.toml"))
    assert out.returncode == 2 and "no such file" in out.stderr


def test_env_override_is_validated_too(tmp_path: Path) -> None:
    out = run("validate-config", env={"TWIBRIDGE_SERVER_PORT": "abc"}, cwd=tmp_path)
    assert out.returncode == 2 and "server.port: expected an integer 1-65535, got 'abc'" in out.stderr


def test_serve_refuses_unsigned_traffic_without_a_token(tmp_path: Path) -> None:
    out = run("serve", cwd=tmp_path)  # built-in defaults: signatures on, no token
    assert out.returncode == 2
    assert "refusing to start" in out.stderr and "auth_token" in out.stderr


def test_version_is_the_package_metadata() -> None:
    import importlib.metadata
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert importlib.metadata.version("twibridge") == declared
    out = run("--version")
    assert (out.returncode, out.stdout, out.stderr) == (0, f"twibridge {declared}\n", "")
    import twibridge

    assert twibridge.__version__ == declared
