"""The ``twibridge`` command line (Typer).

Only typer and the stdlib are imported at module level: the server stack
(quart_trio, hypercorn, twilio.rest) costs ~0.5 s to import, so each command
imports what it needs inside, and ``twibridge --help`` starts fast.

Exit codes: 0 success; 1 runtime failure; 2 bad usage, input or config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from twibridge.cli_common import CONFIG_HELP, load_config_or_exit

app = typer.Typer(
    name="twibridge",
    help="Answer Twilio phone calls with an AI voice agent (Media Streams ↔ VAPI / OpenAI Realtime / "
    "your own WebSocket agent / the embedded echo agent).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts say "[server] port" literally
)



@app.command()
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
    log = logs.get_logger("twibridge.server")
    problems = serve_problems(cfg)
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
    log.info("server.starting", config=str(path) if path else "built-in defaults", pid=os.getpid(), workers=n)
    try:
        if n > 1:
            from twibridge.workers import run_workers

            raise typer.Exit(run_workers(cfg, path, n, host=host, port=port))
        import trio

        from twibridge.server import serve as run_server

        trio.run(lambda: run_server(cfg, host=host, port=port))
    except OSError as exc:
        typer.echo(f"cannot serve on {host or cfg.server.host}:{cfg.server.port if port is None else port}: {exc}",
                   err=True)
        raise typer.Exit(1) from None
    log.info("server.stopped")


@app.command("validate-config")
def validate_config(
    path: Optional[Path] = typer.Argument(None, help="Config file to check (default: as for serve)."),
) -> None:
    """Check a config file: prints 'ok' (exit 0) or one line per problem (exit 2)."""
    cfg, _ = load_config_or_exit(path)
    from twibridge.config import serve_problems

    for line in serve_problems(cfg):
        typer.echo(f"warning: {line}", err=True)
    typer.echo("ok")


def _register_commands() -> None:
    """Commands that live beside their subject (each imports only typer at top)."""
    from twibridge.cli_calls import calls_command
    from twibridge.cli_outbound import call_command
    from twibridge.simulate.command import simulate_call

    app.command("simulate-call")(simulate_call)
    app.command("call")(call_command)
    app.command("calls")(calls_command)


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
