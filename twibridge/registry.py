"""The call registry: which calls are live, keyed by CallSid.

A second stream for a CallSid that is still live is refused (a duplicate
socket for one call has been reported in the wild; two bridges talking to
one caller would be worse than refusing).  The interface is small so a
shared backend (Redis, for several processes or VMs) can stand behind it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class CallRecord:
    call_sid: str
    stream_sid: str
    from_number: str = ""
    to_number: str = ""
    started_at: float = field(default_factory=time.time)


class CallRegistry(Protocol):
    async def try_register(self, record: CallRecord) -> bool:
        """Claim ``record.call_sid``; False when it is already live."""
        ...

    async def unregister(self, call_sid: str, summary: dict[str, Any] | None = None) -> None:
        """Release the CallSid; keep ``summary`` as recent history."""
        ...

    def live(self) -> list[CallRecord]:
        """Calls live in this process."""
        ...


class MemoryRegistry:
    """In-process registry (the default): nothing shared across processes."""

    def __init__(self, history: int = 200) -> None:
        self._live: dict[str, CallRecord] = {}
        self._history: list[dict[str, Any]] = []
        self._history_cap = history

    async def try_register(self, record: CallRecord) -> bool:
        if record.call_sid in self._live:
            return False
        self._live[record.call_sid] = record
        return True

    async def unregister(self, call_sid: str, summary: dict[str, Any] | None = None) -> None:
        self._live.pop(call_sid, None)
        if summary is not None:
            self._history.append(summary)
            del self._history[: -self._history_cap]

    def live(self) -> list[CallRecord]:
        return list(self._live.values())

    def history(self) -> list[dict[str, Any]]:
        return list(self._history)
