"""requirements.lock covers pyproject.toml: every dependency and test extra, pinned, with hashes.

``scripts/setup`` installs from the lock only (then twibridge with --no-deps), so a dependency
added to pyproject.toml but not locked would be missing from every fresh install: this test says
which, and that ``./scripts/lock`` fixes it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked() -> dict[str, list[tuple[str, str | None]]]:
    pins: dict[str, list[tuple[str, str | None]]] = {}
    text = (ROOT / "requirements.lock").read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        first = block.splitlines()[0]
        match = PIN.match(first)
        if match is None:
            continue
        assert "--hash=sha256:" in block, f"{first}: no hash"
        pins.setdefault(canonicalize_name(match[1]), []).append((match[2], match[3]))
    return pins


def test_every_declared_dependency_is_locked_within_its_bounds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    pins = locked()
    assert pins, "requirements.lock has no pins"
    for line in declared:
        req = Requirement(line)
        versions = pins.get(canonicalize_name(req.name))
        assert versions, f"{req.name} is in pyproject.toml but not in requirements.lock: run ./scripts/lock"
        for version, _marker in versions:  # one pin per Python-version fork (e.g. numpy)
            assert req.specifier.contains(version, prereleases=True), \
                f"requirements.lock pins {req.name}=={version}, outside {req.specifier}: run ./scripts/lock"
