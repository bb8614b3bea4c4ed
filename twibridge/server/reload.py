"""Live reload: SIGHUP (``systemctl reload``) re-reads the config; new calls get it, live calls keep theirs.

Why this is safe for calls: :class:`~twibridge.runtime.Runtime` holds the
config as one immutable snapshot, and every call takes its own reference
when its socket is accepted (``Call.cfg``), so swapping ``rt.config`` changes
what the *next* ``/voice`` and the *next* stream see, never a live call.

The order, like nginx's: read and validate everything first (the TOML, the
environment, what ``serve`` would refuse, what only the routing wing can
check); a bad file is refused with one log line listing each problem by key,
and the running config stays.  Keys that need a restart (the listener's
``host``, ``port`` and ``workers``, the state backend) keep their running
values, with a warning naming them.  systemd hears ``RELOADING=1`` (with
``MONOTONIC_USEC``, for ``Type=notify-reload``) before and ``READY=1`` after,
whatever the outcome.

Hypercorn's own SIGHUP handling (stop every worker, start new ones, cutting
calls after its 3 s graceful timeout) is never used: the daemon owns the signal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import trio
from pydantic import SecretStr

from twibridge import logs, routing
from twibridge.config import Config, ConfigError, build_config, load_config, serve_problems
from twibridge.runtime import Runtime
from twibridge.server import systemd

log = logs.get_logger("twibridge.server.reload")

#: (section, key) pairs a running server cannot change: they wait for the restart.  The
#: listener and its limits (set on Hypercorn and the app at start), the state backend, the
#: post-call deliverer (its spool is opened at start), the recordings' sweeper.
RESTART_ONLY = (("server", "host"), ("server", "port"), ("server", "workers"),
                ("server", "max_connections"), ("server", "max_body_bytes"), ("server", "max_form_fields"),
                ("server", "body_timeout_s"), ("server", "max_message_bytes"),
                ("server", "max_connections_per_address"), ("server", "trusted_proxies"),
                ("server", "tls_cert"), ("server", "tls_key"),
                ("state", "backend"), ("state", "redis_url"),
                ("webhooks", "call_ended"), ("webhooks", "secret"), ("webhooks", "timeout_s"),
                ("webhooks", "spool_dir"), ("recording", "dir"), ("recording", "keep_days"))


def load_checked(path: Path | None) -> Config:
    """The config at ``path`` (+ environment) if ``serve`` would run it.

    Raises:
        ConfigError: one line per problem, naming the key.
    """
    from twibridge.call.sounds import sound_problems
    from twibridge.server import tls
    from twibridge.tools.checks import problems as tools_problems

    cfg = load_config(path)
    problems = (serve_problems(cfg) + routing.problems(cfg) + tools_problems(cfg) + sound_problems(cfg)
                + tls.problems(cfg.server))
    if problems:
        raise ConfigError(problems)
    return cfg


def _value(cfg: Config, section: str, key: str) -> Any:
    return getattr(getattr(cfg, section), key)


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """The restart-only keys ``new`` changes (dotted)."""
    return [f"{s}.{k}" for s, k in RESTART_ONLY if _value(old, s, k) != _value(new, s, k)]


def keep_restart_only(old: Config, new: Config) -> Config:
    """``new`` with the restart-only keys as they run now."""
    update: dict[str, Any] = {}
    for section in {s for s, _ in RESTART_ONLY}:
        keys = {k: _value(old, s, k) for s, k in RESTART_ONLY if s == section}
        update[section] = getattr(new, section).model_copy(update=keys)
    return new.model_copy(update=update)


def apply(rt: Runtime, new: Config) -> Config:
    """Swap ``rt.config`` for ``new`` (already validated); return what now runs."""
    old = rt.config
    waiting = restart_only_changes(old, new)
    if waiting:
        log.warning("config.reload_needs_restart", keys=waiting,
                    message="these keys keep their running values until the next restart")
    new = keep_restart_only(old, new)
    from twibridge.call.sounds import load_sounds

    sounds = load_sounds(new)  # checked by load_checked; raises before anything changed
    logs.SCRUBBER.add(new.secrets())  # before anything can log the new secrets
    if (new.log.level, new.log.format) != (old.log.level, old.log.format):
        logs.configure(new.log.level, new.log.format, new.secrets())
    rt.config, rt.sounds = new, sounds
    if rt.metrics is not None:
        rt.metrics.config_reload("applied")
    log.info("config.reloaded", agents=sorted(new.agents), routes=len(new.routes),
             lookup=bool(new.routing.webhook), live_calls=len(rt.calls),
             message="new calls get the new config; live calls finish on theirs")
    return new


def refuse(rt: Runtime, problems: list[str], *, quiet: bool = False) -> None:
    """Count (and, unless ``quiet``, log) a refused reload; the running config stays."""
    if rt.metrics is not None:
        rt.metrics.config_reload("refused")
    if not quiet:
        log.warning("config.reload_refused", problems=problems, message="the running config stays")


async def reload_from_file(rt: Runtime, path: Path | None, notifier: systemd.Notifier) -> bool:
    """SIGHUP in a single-process server: re-read ``path``, apply or refuse; True when applied."""
    notifier.reloading()
    log.info("config.reloading", config=str(path) if path else "built-in defaults")
    try:
        apply(rt, load_checked(path))
        return True
    except ConfigError as exc:
        refuse(rt, exc.problems)
        return False
    finally:
        notifier.ready(systemd.status_text(rt))


# ------------------------------------------------------------ serve --workers
#
# The parent validates once (load_checked) and forwards the result over each
# child's stdin, which stays open after the first config: one JSON line per
# message, {"reload": CONFIG} or {"refused": [PROBLEMS]} (counted, logged by
# the parent only).  A child acknowledges an applied reload with a "L" on its
# heartbeat pipe; the parent says READY=1 once every live child has (bounded).

#: How long the parent waits for every worker to acknowledge a reload.
ACK_TIMEOUT_S = 5.0
MAX_LINE_BYTES = 4 * 1024 * 1024


def config_payload(config: Config) -> bytes:
    """The config as JSON with secrets revealed (only ever written to a child's stdin)."""

    def plain(v: Any) -> Any:
        if isinstance(v, SecretStr):
            return v.get_secret_value()
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return json.dumps(plain(config.model_dump())).encode()


class Acks:
    """Reload acknowledgements the parent has heard from its children."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = trio.Event()

    def add(self, n: int) -> None:
        if n:
            self.count += n
            self.changed.set()
            self.changed = trio.Event()


async def forward(old: Config, path: Path | None, notifier: systemd.Notifier,
                  children: list[trio.abc.SendStream], acks: Acks, adopt: Callable[[Config], None]) -> Config | None:
    """The parent's SIGHUP: validate once, ``adopt`` it (before any child can restart on the
    old one), send it to every child; the new config, or None if refused."""
    notifier.reloading()
    log.info("config.reloading", config=str(path) if path else "built-in defaults", workers=len(children))
    try:
        try:
            new = load_checked(path)
        except ConfigError as exc:
            log.warning("config.reload_refused", problems=exc.problems, message="the running config stays")
            await _send_all(children, json.dumps({"refused": exc.problems}).encode())
            return None
        waiting = restart_only_changes(old, new)
        if waiting:
            log.warning("config.reload_needs_restart", keys=waiting,
                        message="these keys keep their running values until the next restart")
        new = keep_restart_only(old, new)
        adopt(new)
        target = acks.count + await _send_all(children, b'{"reload":' + config_payload(new) + b"}")
        with trio.move_on_after(ACK_TIMEOUT_S) as scope:
            while acks.count < target:
                await acks.changed.wait()
        if scope.cancelled_caught:
            log.warning("config.reload_unconfirmed", missing=target - acks.count, timeout_s=ACK_TIMEOUT_S)
        else:
            log.info("workers.reloaded", workers=len(children), message="every worker runs the new config")
        return new
    finally:
        notifier.ready(f"{len(children)} workers ready")


async def _send_all(children: list[trio.abc.SendStream], line: bytes) -> int:
    sent = 0
    for stream in children:
        with trio.move_on_after(ACK_TIMEOUT_S):  # a wedged child must not hold the parent's signal loop
            try:
                await stream.send_all(line + b"\n")
                sent += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # that child is gone; its slot restarts it with the new payload
    return sent


def read_first_line(fd: int) -> tuple[bytes, bytes]:
    """A child's first stdin line (its config) and whatever came after it, unbuffered."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    line, _, rest = data.partition(b"\n")
    return line, rest


async def follow_parent(rt: Runtime, stdin: trio.abc.ReceiveStream, buffered: bytes,
                        acknowledge: Callable[[], None]) -> None:
    """A child's side: apply each reload the parent forwards, until stdin closes."""
    data = buffered
    async with stdin:
        while True:
            while b"\n" in data:
                line, _, data = data.partition(b"\n")
                _follow(rt, line, acknowledge)
            chunk = await stdin.receive_some(65536)
            if not chunk or len(data) > MAX_LINE_BYTES:
                return
            data += chunk


def _follow(rt: Runtime, line: bytes, acknowledge: Callable[[], None]) -> None:
    try:
        message = json.loads(line)
        if "refused" in message:
            refuse(rt, list(message["refused"]), quiet=True)
            return
        apply(rt, build_config(message["reload"]))
    except (ValueError, KeyError, TypeError, ConfigError) as exc:
        log.error("config.reload_message_bad", error=type(exc).__name__, action="the running config stays")
        return
    acknowledge()
