"""``twibridge serve``: run the bridge (one process, or ``--workers N``)."""

from __future__ import annotations

import ipaddress
import os
import signal
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from twibridge.cli.common import CONFIG_HELP, load_config_or_exit

if TYPE_CHECKING:
    from twibridge.config import Config

#: Where systemd/twibridge.service keeps the secrets (EnvironmentFile=).
ENV_FILE = Path("/etc/twibridge/twibridge.env")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; a name or a wildcard counts as public."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def unsigned_public_problem(cfg: Config, host: str) -> str | None:
    """Signatures off on an address others can reach: refused unless forced on purpose."""
    if cfg.twilio.validate_signatures or is_loopback(host) or cfg.server.allow_unsigned_public:
        return None
    return (f"twilio.validate_signatures = false while listening on {host!r}, which is not loopback: anyone "
            "who reaches the port could open agent sessions and call control. Listen on 127.0.0.1, turn "
            "signatures on, or set server.allow_unsigned_public = true if you really mean it.")


def readable_secret_files(cfg: Config, config_path: Path | None, env_file: Path = ENV_FILE) -> list[str]:
    """Files holding our secrets that group or others may read (the config file if a secret is in it)."""
    found = []
    secrets = [s for s in cfg.secrets() if len(s) >= 4]
    candidates: list[tuple[Path, bool]] = [(env_file, True)]
    if config_path is not None:
        candidates.append((config_path, False))
    for path, always in candidates:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue  # absent, or not ours to see
        if not mode & (stat.S_IRGRP | stat.S_IROTH):
            continue
        if not always:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            if not any(secret in text for secret in secrets):
                continue
        found.append(f"{path} (mode {stat.S_IMODE(mode):04o})")
    return found


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
    from twibridge.call.sounds import sound_problems
    from twibridge.routing import problems as routing_problems
    from twibridge.server import tls
    from twibridge.tools.checks import problems as tools_problems

    problems = serve_problems(cfg) + tools_problems(cfg) + sound_problems(cfg) + routing_problems(cfg) + tls.problems(cfg.server)
    unsigned_public = unsigned_public_problem(cfg, host or cfg.server.host)
    if unsigned_public:
        problems = [*problems, unsigned_public]
    if problems:
        for line in problems:
            typer.echo(f"refusing to start: {line}", err=True)
        raise typer.Exit(2)
    if not cfg.twilio.validate_signatures:
        log.warning("server.signatures_disabled",
                    message="twilio.validate_signatures = false: unsigned requests are accepted. "
                    "For local development only.", host=host or cfg.server.host,
                    allow_unsigned_public=cfg.server.allow_unsigned_public)
    elif not cfg.twilio.require_stream_token:
        log.warning("server.stream_tokens_disabled",
                    message="twilio.require_stream_token = false: a stream needs only the upgrade "
                    "signature, which is the same for every call.")
    for where in readable_secret_files(cfg, path):
        log.warning("server.secrets_readable", file=where,
                    message="a file holding secrets is readable by group or others: chmod 600 it "
                    "(docs/security.md)")
    n = workers or cfg.server.workers
    # SIGHUP is a reload once the server listens; before that (and after the drain) it must not
    # kill the process, as Python's default would.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from twibridge import __version__

    log.info("server.starting", version=__version__, config=str(path) if path else "built-in defaults",
             pid=os.getpid(), workers=n)
    try:
        if n > 1:
            from twibridge.server.workers import run_workers

            raise typer.Exit(run_workers(cfg, path, n, host=host, port=port))
        import trio

        from twibridge.server.app import serve as run_server
        from twibridge.server.heap import freeze_startup_heap

        freeze_startup_heap()
        trio.run(lambda: run_server(cfg, host=host, port=port, config_path=path))
    except* OSError as group:  # the bind fails inside Hypercorn's nursery: an exception group
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        typer.echo(f"cannot serve on {host or cfg.server.host}:{cfg.server.port if port is None else port}: {first}",
                   err=True)
        raise typer.Exit(1) from None
    log.info("server.stopped")
