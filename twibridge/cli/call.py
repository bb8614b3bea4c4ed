"""``twibridge call +15551234567``: place an outbound call answered by the agent.

Only typer and the stdlib at module level (the CLI's rule: ``--help`` stays
fast); config, trio, httpx and twilio are imported inside the command.
Registered by ``twibridge/cli.py`` as ``app.command("call")(call_command)``.

Exit codes as for the rest of the CLI: 0 placed (the CallSid on stdout, alone,
so scripts can capture it); 1 Twilio unreachable, timed out or failing;
2 bad input, missing config, or Twilio refusing the request (4xx: bad
credentials, unverified From, invalid To).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from twibridge.cli.common import CONFIG_HELP, load_config_or_exit


def call_command(
    to: str = typer.Argument(..., help="Number to call, E.164 (e.g. +15551234567)."),
    from_: Optional[str] = typer.Option(None, "--from", help="Twilio number to call from "
                                        "(default: [twilio] from_number)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    ring_timeout: Optional[int] = typer.Option(None, "--ring-timeout", min=5, max=600,
                                               help="Seconds to let it ring (Twilio's default: 60)."),
    machine_detection: Optional[bool] = typer.Option(
        None, "--machine-detection/--no-machine-detection",
        help="Twilio answering-machine detection: on a machine, leave [outbound] voicemail_say after the beep "
        "(or hang up) instead of starting the agent (default: [outbound] machine_detection)."),
) -> None:
    """Place an outbound call; when answered, it is bridged to the agent like an inbound call.

    Needs server.public_url (a running twibridge reachable by Twilio),
    twilio.account_sid, twilio.auth_token and a From number.
    """
    cfg, _ = load_config_or_exit(config)

    import trio

    from twibridge import logs
    from twibridge.twilio.outbound import outbound_problems, place_call
    from twibridge.twilio.rest import TwilioRestError, check_number

    logs.configure(cfg.log.level, cfg.log.format, cfg.secrets())
    problems = outbound_problems(cfg, from_)
    for number, what in ((to, "to"), (from_ or cfg.twilio.from_number, "from")):
        if number:
            try:
                check_number(number, what)
            except TwilioRestError as exc:
                problems.append(exc.message)
    if problems:
        for line in problems:
            typer.echo(f"cannot place the call: {line}", err=True)
        raise typer.Exit(2)
    try:
        call_sid = trio.run(lambda: place_call(cfg, to, from_, ring_timeout_s=ring_timeout,
                                                   machine_detection=machine_detection))
    except TwilioRestError as exc:
        typer.echo(f"call not placed: {exc.message}", err=True)
        raise typer.Exit(1 if exc.retryable else 2) from None
    typer.echo(call_sid)
