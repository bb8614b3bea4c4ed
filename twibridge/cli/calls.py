"""``twibridge calls``: live calls and recent call summaries from the shared registry.

Reads Redis directly (``[state] backend = "redis"``), so it works from any
host with the config, whichever instance holds a call, and after restarts.
With the memory backend there is nothing shared to read (each server process
keeps its own registry in memory), so the command says so and exits 2 — the
config cannot answer this question — rather than print an empty list that
would look like "no calls".

Exit codes: 0 listed; 1 Redis unreachable; 2 bad config or memory backend.
Only typer and the stdlib at module top (``twibridge --help`` stays fast).

What it prints came from callers and peers (a caller's "From" is whatever
the phone network says): every value is checked for its type as read back
from Redis, stripped of control characters and terminal escape sequences,
cut to a sane length, and handed to rich as plain ``Text`` — never as markup
(a From of ``[/]`` once crashed the listing for as long as the history kept it).
"""

from __future__ import annotations

import json
import re
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any, Optional

import typer

from twibridge.cli.common import CONFIG_HELP, load_config_or_exit

MEMORY_BACKEND_MESSAGE = (
    "memory backend: no shared registry; use [state] backend = 'redis' "
    "(each server process keeps its calls in its own memory)"
)


def calls_command(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    json_: bool = typer.Option(False, "--json", help="Print JSON ({\"live\": [...], \"recent\": [...]})."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=10_000, help="Recent summaries to show."),
) -> None:
    """List live calls and recent call summaries from the shared (Redis) registry."""
    if ctx.invoked_subcommand is not None:  # `calls show ...`: that command's turn
        return
    cfg, _ = load_config_or_exit(config)
    if cfg.state.backend != "redis":
        typer.echo(MEMORY_BACKEND_MESSAGE, err=True)
        raise typer.Exit(2)

    from twibridge import logs

    # Warnings to stderr only: stdout is the listing (or JSON for scripts).
    logs.configure("warning", cfg.log.format, cfg.secrets(), stream=sys.stderr)
    import trio

    try:
        live, recent = trio.run(_fetch, cfg, limit)
    except _Unreachable as exc:
        typer.echo(f"cannot reach Redis ([state] redis_url) within {cfg.state.timeout_s:g}s: {exc}", err=True)
        raise typer.Exit(1) from None
    except ValueError as exc:  # an unusable URL (the message never contains it)
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if json_:
        typer.echo(json.dumps({"live": live, "recent": recent}, indent=2, default=str))
    else:
        _print_tables(live, recent)


class _Unreachable(Exception):
    pass


async def _fetch(cfg: Any, limit: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from twibridge.state.redis_registry import RedisRegistry, RegistryUnavailable

    reg = RedisRegistry(cfg, fallback=False)
    try:
        live = [r.to_dict() for r in await reg.live()]
        recent = await reg.recent(limit)
    except RegistryUnavailable:
        raise _Unreachable("no answer (is redis-server running and reachable?)") from None
    finally:
        await reg.aclose()
    return live, recent


#: ESC-introduced terminal sequences (CSI, OSC, and two-character ones), removed whole.
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-_])|\x9b[0-?]*[ -/]*[@-~]")
#: Longest value shown in a table cell.
MAX_CELL = 64


def clean(value: Any, limit: int = MAX_CELL) -> str:
    """A stored value as safe plain text: strings and numbers only, no escapes or control characters."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ""
    text = _ESCAPES.sub("", str(value))
    text = "".join(c for c in text if unicodedata.category(c)[0] != "C")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _when(epoch: Any) -> str:
    value = _number(epoch)
    if value is None:
        return ""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    except (OverflowError, OSError, ValueError):  # a stored number no clock can show
        return ""


def _print_tables(live: list[dict[str, Any]], recent: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    def row(*cells: str) -> list[Text]:
        return [Text(c) for c in cells]  # plain text: never parsed as markup

    # Piped (grep, less, a script): wide enough that no CallSid is cut.
    console = Console(width=None if sys.stdout.isatty() else 220)
    now = time.time()
    t = Table(title=f"Live calls ({len(live)})", title_justify="left")
    for col in ("CallSid", "From", "To", "Started", "Age", "Instance"):
        t.add_column(col, no_wrap=col == "CallSid", min_width=34 if col == "CallSid" else None)
    for r in live:
        if not isinstance(r, dict):
            continue
        started = _number(r.get("started_at"))
        age = now - started if started is not None else None
        t.add_row(*row(clean(r.get("call_sid")), clean(r.get("from_number")), clean(r.get("to_number")),
                       _when(started), f"{age:.0f}s" if age is not None else "", clean(r.get("instance"))))
    console.print(t)
    t = Table(title=f"Recent calls ({len(recent)}, newest first)", title_justify="left")
    for col in ("Ended", "CallSid", "Outcome", "Duration", "From", "Reply p50", "Barge-ins", "Instance"):
        t.add_column(col, no_wrap=col == "CallSid", min_width=34 if col == "CallSid" else None)
    for s in recent:
        if not isinstance(s, dict):
            continue
        dur, p50 = _number(s.get("duration_s")), _number(s.get("reply_latency_p50_ms"))
        t.add_row(*row(_when(s.get("ended_at")), clean(s.get("call_sid")), clean(s.get("outcome")),
                       f"{dur:.1f}s" if dur is not None else "", clean(s.get("from_number")),
                       f"{p50:.0f} ms" if p50 is not None else "", clean(s.get("barge_ins")),
                       clean(s.get("instance"))))
    console.print(t)
