"""``twibridge serve``: run the bridge (one process, or ``--workers N``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from twibridge.cli.common import CONFIG_HELP, load_config_or_exit


def serve(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    host: Optional[str] = typer.Option(None, help="Override [server] host."),
    port: Optional[int] = typer.Option(None, help="Override [server] port."),
    workers: Optional[int] = typer.Option(
        None, "--workers", "-w", min=1, max=64,
        help="Processes sharing the port, each its own Trio loop (default: [server] workers)."),
) -> None:
    """Run the bridge: webhook, Media Streams endpoint, health and metrics."""
    cfg, path = load_config_or_exit(config)
    from twibridge.config import serve_problems

    from twibridge import logs

    logs.configure(cfg.log.level, cfg.log.format, cfg.secrets())
    log = logs.get_logger("twibridge.server.app")
    from twibridge.server import tls

    problems = serve_problems(cfg) + tls.problems(cfg.server)
    if problems:
        for line in problems:
            typer.echo(f"refusing to start: {line}", err=True)
        raise typer.Exit(2)
    if not cfg.twilio.validate_signatures:
        log.warning("server.signatures_disabled",
                    message="twilio.validate_signatures = false: unsigned requests are accepted. "
                    "For local development only.")
    elif not cfg.twilio.require_stream_token:
        log.warning("server.stream_tokens_disabled",
                    message="twilio.require_stream_token = false: a stream needs only the upgrade "
                    "signature, which is the same for every call.")
    n = workers or cfg.server.workers
    from twibridge import __version__

    log.info("server.starting", version=__version__, config=str(path) if path else "built-in defaults",
             pid=os.getpid(), workers=n)
    try:
        if n > 1:
            from twibridge.server.workers import run_workers

            raise typer.Exit(run_workers(cfg, path, n, host=host, port=port))
        import trio

        from twibridge.server.app import serve as run_server

        trio.run(lambda: run_server(cfg, host=host, port=port))
    except OSError as exc:
        typer.echo(f"cannot serve on {host or cfg.server.host}:{cfg.server.port if port is None else port}: {exc}",
                   err=True)
        raise typer.Exit(1) from None
    log.info("server.stopped")
