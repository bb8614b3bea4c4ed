"""The patches on Hypercorn and quart-trio still fit the installed releases.

``twibridge/server/hypercorn_fix.py`` wraps Hypercorn methods and
``twibridge/server/asgi.py`` subclasses quart-trio's connection classes.  A
new release could make a guard silently do nothing (a renamed method, a moved
attribute) or dead weight (the flaw fixed upstream).  This test fails naming
each such guard; ``pyproject.toml`` bounds both libraries below their next
minor release until it passes there.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path
from typing import Any

import pytest
import trio
from hypercorn.trio.tcp_server import TCPServer
from packaging.requirements import Requirement

from twibridge.server import hypercorn_fix

ROOT = Path(__file__).resolve().parents[2]
PATCHED = ("hypercorn", "quart", "quart-trio")


def test_every_guard_still_applies_to_the_installed_libraries() -> None:
    versions = {name: importlib.metadata.version(name) for name in PATCHED}
    problems = hypercorn_fix.stale_guards()
    assert not problems, (f"guards that no longer apply to {versions}:\n  " + "\n  ".join(problems)
                          + "\nRe-check each against the new release before raising its bound in pyproject.toml.")


def test_patched_libraries_are_bounded_above_and_installed_within_the_bounds() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = {(r := Requirement(d)).name: r for d in deps}
    for name in PATCHED:
        spec = reqs[name].specifier
        assert any(s.operator == "<" for s in spec), f"{name} has no upper bound in pyproject.toml"
        assert spec.contains(importlib.metadata.version(name)), f"installed {name} is outside {spec}"


async def _catches_busy(self: Any, event: Any) -> None:
    async with self.send_lock:
        try:
            await self.stream.send_all(event.data)
        except (trio.BrokenResourceError, trio.BusyResourceError):  # what a fixed release would do
            pass


async def _close_under_lock(self: Any) -> None:
    async with self.send_lock:
        await self.stream.send_eof()


async def _locks_otherwise(self: Any, event: Any) -> None:
    await self.send_lock.acquire()  # the eager lock's __aenter__ would no longer be what is used
    try:
        await self.stream.send_all(event.data)
    finally:
        self.send_lock.release()


@pytest.mark.parametrize(("attr", "replacement", "guard"), [
    ("protocol_send", _catches_busy, "hypercorn_fix.close_race"),
    ("protocol_send", _locks_otherwise, "hypercorn_fix.eager_send_lock"),
    ("_close", _close_under_lock, "hypercorn_fix.close_race"),
])
def test_an_upstream_fix_is_reported_by_the_guards_name(monkeypatch: pytest.MonkeyPatch, attr: str,
                                                        replacement: Any, guard: str) -> None:
    monkeypatch.setattr(TCPServer, attr, replacement)
    problems = hypercorn_fix.stale_guards()
    assert problems and all(line.startswith(guard) for line in problems), problems


def _init_without_app_put(self: Any, *args: Any) -> None:
    self.closed = False
    self.state = None
    self.stream_id = 0


def test_a_renamed_attribute_is_reported_by_the_guards_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from hypercorn.protocol.ws_stream import WSStream

    monkeypatch.setattr(WSStream, "__init__", _init_without_app_put)
    assert hypercorn_fix.stale_guards() == [
        "hypercorn_fix.too_big (WSStream._send_wsproto_event): WSStream has no self.app_put"]
