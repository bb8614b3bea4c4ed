"""structlog set-up: JSON lines for journald, console for a terminal.

Every line of a call carries ``call_sid`` (bound with contextvars at the call
boundary, so the call's child tasks inherit it and calls stay isolated).
Secrets are scrubbed by value: whatever the config holds as a secret (auth
token, API keys, header values, a Redis password URL) is replaced by
``[redacted]`` in any string of any log line, so even an exception message
that happens to quote a URL or header cannot leak one.  Never log per frame
at INFO: a JSON line costs ~8 µs.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Iterable, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
REDACTED = "[redacted]"


class SecretScrubber:
    """A structlog processor replacing known secret values anywhere in an event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for s in secrets:
            if s and s not in self.secrets:
                self.secrets.append(s)
        self.secrets.sort(key=len, reverse=True)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for s in self.secrets:
                if s in value:
                    value = value.replace(s, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._scrub(v) for v in value)
        return value

    def __call__(self, logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
        if not self.secrets:
            return event
        return {k: self._scrub(v) for k, v in event.items()}


SCRUBBER = SecretScrubber()


def configure(level: str = "info", fmt: str = "json", secrets: Iterable[str] = (),
              stream: TextIO | None = None) -> None:
    """Configure structlog process-wide (idempotent; later calls replace it)."""
    SCRUBBER.add(secrets)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        SCRUBBER,
    ]
    if fmt == "json":
        processors.append(structlog.processors.JSONRenderer())
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # One write per line (message + newline together): with --workers several
        # processes share stderr, and print()'s two writes interleaved their lines.
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "twibridge") -> Any:
    return structlog.get_logger(name)
