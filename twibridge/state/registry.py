"""The call registry: which calls are live, and what recent calls did.

Keyed by CallSid.  A second stream for a CallSid that is still live is
refused (a duplicate socket for one call has been reported in the wild; two
bridges talking to one caller would be worse than refusing).

The interface is small so a shared backend (``[state] backend = "redis"``)
can stand behind it for several processes or VMs: live records carry a TTL
refreshed while the call lives (a crashed instance's calls expire by
themselves), :meth:`count` is cluster-wide for ``max_calls``, and call
summaries outlive restarts.  Registry operations happen per call, never per
frame, and every caller bounds them with ``[state] timeout_s``: the audio
path never waits on the registry.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass
class CallRecord:
    call_sid: str
    stream_sid: str
    from_number: str = ""
    to_number: str = ""
    started_at: float = field(default_factory=time.time)
    instance: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CallRegistry(Protocol):
    async def try_register(self, record: CallRecord) -> bool:
        """Claim ``record.call_sid``; False when it is already live (anywhere)."""
        ...

    async def refresh(self, call_sid: str) -> None:
        """Keep a live record from expiring (called every ``record_ttl_s / 3``)."""
        ...

    async def unregister(self, call_sid: str, summary: dict[str, Any] | None = None) -> None:
        """Release the CallSid; keep ``summary`` as recent history."""
        ...

    async def count(self) -> int:
        """Live calls across every instance sharing this registry."""
        ...

    async def live(self) -> list[CallRecord]:
        """Live call records across every instance."""
        ...

    async def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """Summaries of ended calls, newest first."""
        ...

    async def aclose(self) -> None:
        ...
