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
    cfg, chosen = load_config_or_exit(path)
    from twibridge.config import serve_problems
    from twibridge.server import tls

    bad_tls = tls.problems(cfg.server)  # the files are part of the config: unreadable = invalid
    for line in bad_tls:
        typer.echo(f"{chosen}: {line}" if chosen else line, err=True)
    if bad_tls:
        raise typer.Exit(2)

    for line in serve_problems(cfg):
        typer.echo(f"warning: {line}", err=True)
    typer.echo("ok")
