"""``twibridge calls``: live calls and recent call summaries from the shared registry.

Reads Redis directly (``[state] backend = "redis"``), so it works from any
host with the config, whichever instance holds a call, and after restarts.
With the memory backend there is nothing shared to read (each server process
keeps its own registry in memory), so the command says so and exits 2 — the
config cannot answer this question — rather than print an empty list that
would look like "no calls".

Exit codes: 0 listed; 1 Redis unreachable; 2 bad config or memory backend.
Only typer and the stdlib at module top (``twibridge --help`` stays fast).
"""

from __future__ import annotations

import json
import sys
import time
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


def _when(epoch: Any) -> str:
    if not isinstance(epoch, (int, float)):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _print_tables(live: list[dict[str, Any]], recent: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped (grep, less, a script): wide enough that no CallSid is cut.
    console = Console(width=None if sys.stdout.isatty() else 220)
    now = time.time()
    t = Table(title=f"Live calls ({len(live)})", title_justify="left")
    for col in ("CallSid", "From", "To", "Started", "Age", "Instance"):
        t.add_column(col, no_wrap=col == "CallSid", min_width=34 if col == "CallSid" else None)
    for r in live:
        age = now - r["started_at"] if isinstance(r.get("started_at"), (int, float)) else None
        t.add_row(r.get("call_sid", ""), r.get("from_number", ""), r.get("to_number", ""),
                  _when(r.get("started_at")), f"{age:.0f}s" if age is not None else "", r.get("instance", ""))
    console.print(t)
    t = Table(title=f"Recent calls ({len(recent)}, newest first)", title_justify="left")
    for col in ("Ended", "CallSid", "Outcome", "Duration", "From", "Reply p50", "Barge-ins", "Instance"):
        t.add_column(col, no_wrap=col == "CallSid", min_width=34 if col == "CallSid" else None)
    for s in recent:
        dur, p50 = s.get("duration_s"), s.get("reply_latency_p50_ms")
        t.add_row(_when(s.get("ended_at")), s.get("call_sid", ""), str(s.get("outcome", "")),
                  f"{dur:.1f}s" if isinstance(dur, (int, float)) else "", s.get("from_number", ""),
                  f"{p50:.0f} ms" if isinstance(p50, (int, float)) else "", str(s.get("barge_ins", "")),
                  s.get("instance", ""))
    console.print(t)
