"""The delivery spool: reports on disk before their first attempt, kept across restarts.

Layout under ``[webhooks] spool_dir`` (directories 0700, files 0600: a report
holds a transcript)::

    pending/<CallSid>_<n>.json    waiting for (another) attempt
    failed/<CallSid>_<n>.json     gave up after the last attempt (kept, counted)
    delivered/<CallSid>_<n>.json  answered 2xx (kept DELIVERED_KEEP_DAYS for ``calls show``)

Every write is atomic and durable: a temporary file in the same directory,
``fsync``, ``rename``, then ``fsync`` of the directory, so a crash, a kill or a
power cut leaves either the old file or the new one, never half of one.
State changes (pending → delivered/failed) are one ``rename``.

Synchronous on purpose: each operation is one small file, and the async side
(:mod:`twibridge.records.delivery`) runs them in a worker thread.  The retry
schedule is a pure function, :func:`next_delay`.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from twibridge.logs import get_logger

log = get_logger("twibridge.records.spool")

#: Waits after attempts 1..7 (seconds): 8 attempts over about 67 minutes, then failed.
BACKOFF_S: tuple[float, ...] = (10, 30, 90, 270, 600, 1200, 1800)
#: Delivered reports are kept this long for ``twibridge calls show``, then swept.
DELIVERED_KEEP_DAYS = 7
STATES = ("pending", "failed", "delivered")


@dataclass
class Entry:
    """One report to deliver: its bytes, its fixed ``webhook-id``, its attempts so far."""

    name: str  # file name: <CallSid>_<random>.json
    msg_id: str
    url: str
    body: str
    call_sid: str
    created_at: float
    attempts: int = 0
    next_at: float = 0.0
    last_error: str = ""

    @classmethod
    def new(cls, msg_id: str, url: str, body: bytes, call_sid: str, now: float) -> Entry:
        safe = "".join(c for c in call_sid if c.isalnum())[:64] or "call"
        return cls(f"{safe}_{secrets.token_hex(4)}.json", msg_id, url, body.decode("utf-8"), call_sid, now,
                   next_at=now)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def next_delay(attempts: int, schedule: Sequence[float] = BACKOFF_S, retry_after: float | None = None,
               jitter: float = 0.1) -> float | None:
    """Seconds to wait after ``attempts`` failed attempts; None when it is time to give up.

    ``retry_after`` (the receiver's ``Retry-After``) is honoured when longer,
    up to the schedule's longest wait; ``jitter`` spreads retries of many
    reports (±10 %) so a recovering receiver is not hit all at once.
    """
    if attempts < 1 or attempts > len(schedule):
        return None
    delay = schedule[attempts - 1] * (1 + random.uniform(-jitter, jitter))
    if retry_after is not None:
        delay = max(delay, min(retry_after, max(schedule)))
    return delay


class Spool:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def dir(self, state: str) -> Path:
        return self.root / state

    def ensure(self) -> None:
        """Create the directories (0700).  Raises OSError when it cannot."""
        for state in STATES:
            self.dir(state).mkdir(mode=0o700, parents=True, exist_ok=True)

    def put(self, entry: Entry, state: str = "pending") -> None:
        """Write (or rewrite) ``entry`` atomically and durably."""
        atomic_write(self.dir(state) / entry.name, entry.to_json())

    def move(self, entry: Entry, to: str, frm: str = "pending") -> None:
        """pending → delivered / failed, in one rename (then the directory is fsync'd)."""
        self.put(entry, frm)  # the final attempt count, durably, before the move
        os.replace(self.dir(frm) / entry.name, self.dir(to) / entry.name)
        _fsync_dir(self.dir(to))
        _fsync_dir(self.dir(frm))

    def path(self, entry: Entry, state: str = "pending") -> Path:
        return self.dir(state) / entry.name

    def load(self, state: str = "pending") -> list[Entry]:
        """Every readable entry in ``state``; an unreadable file is logged and moved to failed/."""
        out = []
        for path in sorted(self._files(state)):
            entry = read_entry(path)
            if entry is None:
                log.warning("spool.unreadable", file=path.name, message="moved to failed/")
                if state == "pending":
                    try:
                        os.replace(path, self.dir("failed") / path.name)
                    except OSError:
                        pass
                continue
            out.append(entry)
        return out

    def find(self, call_sid: str) -> list[tuple[str, Entry]]:
        """The entries of one call, in any state (``calls show``)."""
        safe = "".join(c for c in call_sid if c.isalnum())[:64]
        found = []
        for state in STATES:
            for path in sorted(self.dir(state).glob(f"{safe}_*.json")):
                entry = read_entry(path)
                if entry is not None and entry.call_sid == call_sid:
                    found.append((state, entry))
        return found

    def sweep(self, now: float, keep_days: float = DELIVERED_KEEP_DAYS) -> int:
        """Delete delivered reports older than ``keep_days``; how many went."""
        gone = 0
        for path in self._files("delivered"):
            try:
                if now - path.stat().st_mtime > keep_days * 86400:
                    path.unlink()
                    gone += 1
            except OSError:
                continue
        return gone

    def _files(self, state: str) -> Iterator[Path]:
        try:
            yield from (p for p in self.dir(state).iterdir() if p.suffix == ".json" and not p.name.startswith("."))
        except FileNotFoundError:
            return


def read_entry(path: Path) -> Entry | None:
    try:
        data: Any = json.loads(path.read_bytes())
        return Entry(**data) if isinstance(data, dict) else None
    except (OSError, ValueError, TypeError):
        return None


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def age_s(entry: Entry, now: float | None = None) -> float:
    return max(0.0, (time.time() if now is None else now) - entry.created_at)
