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
    from twibridge.call.sounds import sound_problems
    from twibridge.config import serve_problems
    from twibridge.routing import problems as routing_problems
    from twibridge.server import tls
    from twibridge.tools.checks import problems

    # Checks that read files or need other wings: the tools' and the lookup's secrets, the
    # sounds, the TLS files (part of the config: unreadable = invalid).
    bad = problems(cfg) + sound_problems(cfg) + routing_problems(cfg) + tls.problems(cfg.server)
    for line in bad:
        typer.echo(f"{chosen}: {line}" if chosen else line, err=True)
    if bad:
        raise typer.Exit(2)
    for line in serve_problems(cfg):
        typer.echo(f"warning: {line}", err=True)
    typer.echo("ok")
