"""``twibridge calls``: the listing, JSON, memory backend, Redis unreachable (exit codes, no URL leaks)."""

from __future__ import annotations

import json
import os

import pytest
import trio
import typer
from typer.testing import CliRunner

from redis_support import RedisServer, needs_redis, redis_server  # noqa: F401 (fixture)
from support import TOKEN, make_config
from twibridge.cli.calls import MEMORY_BACKEND_MESSAGE, calls_command
from twibridge.state.registry import CallRecord
from twibridge.state.redis_registry import RedisRegistry

app = typer.Typer()
app.command()(calls_command)


def run(monkeypatch: pytest.MonkeyPatch, *args: str, **env: str) -> tuple[int, str, str]:
    monkeypatch.chdir("/")  # no ./twibridge.toml picked up
    for key in [k for k in os.environ if k.startswith("TWIBRIDGE_")]:
        monkeypatch.delenv(key)
    for key, value in {"TWIBRIDGE_TWILIO_AUTH_TOKEN": TOKEN, **env}.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a crash is a crash, not an exit code
    return result.exit_code, result.stdout, result.stderr


def test_memory_backend_says_there_is_nothing_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(monkeypatch, "--json")
    assert code == 2 and out == "" and MEMORY_BACKEND_MESSAGE in err


def test_unreachable_redis_exit_1_without_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "redis://:pa55-word-secret@127.0.0.1:1/0"
    code, out, err = run(monkeypatch, TWIBRIDGE_STATE_BACKEND="redis", TWIBRIDGE_STATE_REDIS_URL=url,
                         TWIBRIDGE_STATE_TIMEOUT_S="0.5")
    assert code == 1 and out == "" and "cannot reach Redis" in err
    assert "pa55-word-secret" not in err + out


@needs_redis
def test_lists_live_and_recent(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer) -> None:
    async def seed() -> None:
        reg = RedisRegistry(make_config(state={"backend": "redis", "redis_url": redis_server.url}))
        try:
            assert await reg.try_register(CallRecord("CAlive", "MZ1", "+1555", "+1666"))
            assert await reg.try_register(CallRecord("CAdone", "MZ2", "+1777", "+1666"))
            await reg.unregister("CAdone", {"outcome": "completed", "duration_s": 12.5,
                                            "reply_latency_p50_ms": 640.0, "barge_ins": 1})
        finally:
            await reg.aclose()

    trio.run(seed)
    env = {"TWIBRIDGE_STATE_BACKEND": "redis", "TWIBRIDGE_STATE_REDIS_URL": redis_server.url}
    code, out, err = run(monkeypatch, "--json", "--limit", "5", **env)
    assert code == 0, err
    data = json.loads(out)
    assert [r["call_sid"] for r in data["live"]] == ["CAlive"]
    assert data["recent"][0]["call_sid"] == "CAdone" and data["recent"][0]["from_number"] == "+1777"
    code, out, err = run(monkeypatch, **env)
    assert code == 0, err
    assert "Live calls (1)" in out and "CAlive" in out and "CAdone" in out and "completed" in out
    assert "12.5s" in out and "640 ms" in out


@needs_redis
def test_hostile_stored_values_are_shown_as_plain_text(monkeypatch: pytest.MonkeyPatch,
                                                      redis_server: RedisServer) -> None:
    """A caller's From of ``[/]`` (rich markup) or terminal escapes, and values of the wrong type
    written into Redis, neither crash the listing nor reach the terminal as escapes."""
    client = redis_server.client()
    try:
        hostile = {"call_sid": ["not", "a", "string"], "from_number": "[/]\x1b]0;pwned\x07\x1b[2J",
                   "to_number": {"x": 1}, "started_at": "yesterday", "instance": "\u202eevil"}
        client.set("twibridge:call:CAbad", json.dumps(hostile))
        client.zadd("twibridge:live", {"CAbad": 9e12})
        summary = {"call_sid": "CAold", "from_number": "[bold red]+1555[/]\x1b[31m", "outcome": ["x"],
                   "duration_s": "long", "ended_at": 1e300, "barge_ins": True}
        client.set("twibridge:summary:CAold", json.dumps(summary))
        client.zadd("twibridge:history", {"CAold": 1.0})
    finally:
        client.close()
    env = {"TWIBRIDGE_STATE_BACKEND": "redis", "TWIBRIDGE_STATE_REDIS_URL": redis_server.url}
    code, out, err = run(monkeypatch, **env)
    assert code == 0, err
    assert "[/]" in out and "[bold red]+1555[/]" in out  # shown literally, never interpreted
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "Live calls (1)" in out and "Recent calls (1" in out
    code, out, err = run(monkeypatch, "--json", **env)
    assert code == 0 and "\x1b" not in out  # JSON escapes control characters itself
    assert json.loads(out)["recent"][0]["from_number"] == summary["from_number"]
