"""The two shipped units: the workers unit is sandboxed exactly like the main one (issue #23, 15).

Parsed as systemd reads them (repeated keys accumulate); only the directives
the workers unit's header explains may differ.
"""

from __future__ import annotations

from pathlib import Path

UNITS = Path(__file__).parents[2] / "systemd"
#: Keys the two units may set differently: what they are, how they start, and the memory ceiling
#: (the workers unit holds N processes).
MAY_DIFFER = {"Description", "Documentation", "ExecStart", "KillMode", "MemoryMax"}


def directives(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


def test_the_workers_unit_is_as_hardened_as_the_main_one() -> None:
    main = directives(UNITS / "twibridge.service")
    workers = directives(UNITS / "twibridge-workers.service.example")
    differ = {k for k in main.keys() | workers.keys()
              if main.get(k) != workers.get(k) and k.split(".", 1)[1] not in MAY_DIFFER}
    assert not differ, {k: (main.get(k), workers.get(k)) for k in sorted(differ)}
    for key in ("ProtectSystem", "NoNewPrivileges", "DynamicUser", "ProtectProc", "ProcSubset",
                "SystemCallFilter", "SystemCallErrorNumber", "CapabilityBoundingSet", "UMask"):
        assert f"Service.{key}" in workers, key
