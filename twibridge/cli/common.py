"""What every ``twibridge`` command shares: loading the config or exiting 2.

Only typer and the stdlib at import time (``--help`` stays fast); the config
layer is imported when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from twibridge.config import Config

CONFIG_HELP = "TOML config file (default: ./twibridge.toml, else /etc/twibridge/twibridge.toml, else built-ins)."


def load_config_or_exit(path: Path | None, *, search_defaults: bool = True) -> tuple[Config, Path | None]:
    """The config and the file it came from; on problems, one line each on stderr and exit 2.

    Args:
        path: the ``--config`` given, if any.
        search_defaults: without ``path``, look for ``./twibridge.toml`` then
            ``/etc/twibridge/twibridge.toml`` (``serve`` and friends); False
            means built-in defaults (``simulate-call``'s in-process bridge).
    """
    from twibridge.config import ConfigError, default_config_path, load_config

    chosen = path if path is not None or not search_defaults else default_config_path()
    try:
        return load_config(chosen), chosen
    except ConfigError as exc:
        for line in exc.problems:
            typer.echo(line if chosen is None or line.startswith(str(chosen)) else f"{chosen}: {line}", err=True)
        raise typer.Exit(2) from None
