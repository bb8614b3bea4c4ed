"""``twibridge routes``: which agent a call would get, and why (for operators).

The same rules as ``/voice`` (:func:`twibridge.routing.decide`), run on the
static routes at the current time.  The pre-call lookup is not asked (it is
the business's system, and this is a dry run): when one is configured the
output says that its answer would come first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from twibridge.cli.common import CONFIG_HELP, load_config_or_exit


def routes_command(
    to: Optional[str] = typer.Option(None, "--to", help="The dialed number (E.164), e.g. +15551230001."),
    from_: Optional[str] = typer.Option(None, "--from", help="The caller's number (E.164)."),
    param: list[str] = typer.Option([], "--param", help="A voice-URL parameter NAME=VALUE (repeatable)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
) -> None:
    """Print which agent a call would get and why; without options, the agents and routes in order."""
    from datetime import datetime, timezone

    from twibridge.config.routing import DEFAULT_AGENT, E164_RE
    from twibridge.routing import CallFacts, decide

    cfg, _ = load_config_or_exit(config)
    for flag, number in (("--to", to), ("--from", from_)):
        if number is not None and not E164_RE.match(number):
            typer.echo(f"{flag}: expected an E.164 number like +15551230001, got {number!r}", err=True)
            raise typer.Exit(2)
    params: dict[str, str] = {}
    for item in param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            typer.echo(f"--param: expected NAME=VALUE, got {item!r}", err=True)
            raise typer.Exit(2)
        params[name] = value
    lookup = (f"lookup: {cfg.routing.webhook.split('?')[0]} is asked first at call time "
              f"(timeout {cfg.routing.timeout_s:g} s); its answer may choose another agent or refuse the call"
              if cfg.routing.webhook else "")
    if to is None and from_ is None and not params:
        names = [f"{DEFAULT_AGENT} ({cfg.agent.provider}, [agent])"]
        names += [f"{name} ({agent.provider})" for name, agent in cfg.agents.items()]
        typer.echo("agents: " + ", ".join(names))
        typer.echo("routes (first match wins):")
        for i, route in enumerate(cfg.routes):
            extra = f", max_calls {route.max_calls}" if route.max_calls else ""
            typer.echo(f"  routes.{i}: {route.describe()} -> {route.agent}{extra}")
        typer.echo(f"  otherwise -> {DEFAULT_AGENT}")
        if lookup:
            typer.echo(lookup)
        return
    decision = decide(cfg, CallFacts("CA-dry-run", from_ or "", to or "", params), datetime.now(timezone.utc))
    provider = cfg.agent_config(decision.agent).provider
    typer.echo(f"agent: {decision.agent} ({provider})")
    typer.echo(f"why: {decision.why}")
    for line in decision.skipped:
        typer.echo(f"not: {line}")
    if lookup:
        typer.echo(lookup)
