"""The ``twibridge`` Typer app: one command per module of :mod:`twibridge.cli`.

Only typer and the stdlib are imported at module level: the server stack
(quart_trio, hypercorn, twilio.rest) costs ~0.5 s to import, so each command
imports what it needs inside, and ``twibridge --help`` starts fast.

Exit codes: 0 success; 1 runtime failure; 2 bad usage, input or config.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="twibridge",
    help="Answer Twilio phone calls with an AI voice agent (Media Streams ↔ VAPI / OpenAI Realtime / "
    "your own WebSocket agent / the embedded echo agent).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts say "[server] port" literally
)


def _register_commands() -> None:
    """One module per command (each imports only typer at top), in help order."""
    from twibridge.cli.call import call_command
    from twibridge.cli.calls import calls_command
    from twibridge.cli.calls_show import show_command
    from twibridge.cli.routes import routes_command
    from twibridge.cli.serve import serve
    from twibridge.cli.simulate_call import simulate_call
    from twibridge.cli.validate import validate_config

    app.command()(serve)
    app.command("validate-config")(validate_config)
    app.command("simulate-call")(simulate_call)
    app.command("call")(call_command)
    calls_app = typer.Typer(help="Live calls and recent summaries; `calls show CALL_SID` for one call.",
                            rich_markup_mode=None)
    calls_app.callback(invoke_without_command=True)(calls_command)  # `twibridge calls` lists, as before
    calls_app.command("show")(show_command)
    app.add_typer(calls_app, name="calls")
    app.command("routes")(routes_command)


def _version(value: bool) -> None:
    if value:
        from twibridge import __version__

        typer.echo(f"twibridge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version (the installed package's) and exit."),
) -> None:
    """Answer Twilio phone calls with an AI voice agent."""


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
