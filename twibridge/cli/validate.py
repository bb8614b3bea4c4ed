"""``twibridge validate-config``: check a config file without starting anything."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from twibridge.cli.common import load_config_or_exit


def validate_config(
    path: Optional[Path] = typer.Argument(None, help="Config file to check (default: as for serve)."),
) -> None:
    """Check a config file: prints 'ok' (exit 0) or one line per problem (exit 2)."""
    cfg, _ = load_config_or_exit(path)
    from twibridge.config import serve_problems

    from twibridge.routing import problems as routing_problems

    errors = routing_problems(cfg)  # what only the routing wing can check (the lookup's secret)
    for line in errors:
        typer.echo(line, err=True)
    if errors:
        raise typer.Exit(2)
    for line in serve_problems(cfg):
        typer.echo(f"warning: {line}", err=True)
    typer.echo("ok")
