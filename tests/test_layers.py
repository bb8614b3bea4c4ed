"""The package's wings import one way, and no module imports itself back.

cli → server / simulate → call → runtime → agents / tools / routing / records /
twilio / audio / state → webhooks → config / logs / locks.  Every import counts: at
module top, inside functions and under ``TYPE_CHECKING`` alike (a cycle there
is still a cycle a reader has to untangle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "twibridge"

#: Higher may import lower (or its own rank); never the other way.
RANK = {
    "__main__": 8, "cli": 7,
    "server": 6, "simulate": 6,
    "call": 5, "handoff": 5,
    "runtime": 4,
    "agents": 3, "tools": 3, "routing": 3, "records": 3, "twilio": 3, "audio": 3, "state": 3,
    "webhooks": 2,
    "config": 1, "logs": 1, "locks": 1, "__init__": 0,
}
#: Wings of the same rank that may use each other (a sibling edge, never both ways).
SIBLINGS = {("agents", "audio"), ("agents", "tools"), ("call", "handoff"),
            ("records", "audio"), ("simulate", "audio"), ("simulate", "twilio"), ("twilio", "audio"),
            ("tools", "audio"), ("routing", "twilio"), ("records", "state")}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("twibridge"):
            found.add(node.module)
            for alias in node.names:  # ``from twibridge.server import systemd`` names a module
                if (PKG.parent / (node.module.replace(".", "/") + f"/{alias.name}.py")).exists():
                    found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("twibridge")}
    return found


def wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = {module_name(p): imports(p) for p in PKG.rglob("*.py")}


def test_every_wing_has_a_rank() -> None:
    assert {wing(m) for m in GRAPH} <= set(RANK), "a new wing needs its place in RANK (and docs/architecture.md)"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_one_way(module: str) -> None:
    mine = wing(module)
    for target in GRAPH[module]:
        theirs = wing(target)
        if theirs == mine or target == "twibridge":
            continue
        assert RANK[theirs] < RANK[mine] or (
            RANK[theirs] == RANK[mine] and (mine, theirs) in SIBLINGS
        ), f"{module} imports {target}: {mine} (rank {RANK[mine]}) may not import {theirs} (rank {RANK[theirs]})"


def test_no_import_cycle() -> None:
    known = set(GRAPH)

    def resolve(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    edges = {m: {t for t in map(resolve, GRAPH[m]) if t and t != m} for m in GRAPH}
    # A package's __init__ importing its own submodule is not a cycle a reader untangles.
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_no_module_over_400_lines() -> None:
    long = {module_name(p): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 420}
    assert not long, f"modules over ~400 lines: {long}"
