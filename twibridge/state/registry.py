"""The call registry: which calls are live, and what recent calls did.

Keyed by CallSid.  A second stream for a CallSid that is still live is
refused (a duplicate socket for one call has been reported in the wild; two
bridges talking to one caller would be worse than refusing).

The interface is small so a shared backend (``[state] backend = "redis"``)
can stand behind it for several processes or VMs: live records carry a TTL
refreshed while the call lives (a crashed instance's calls expire by
themselves), :meth:`count` is cluster-wide for ``max_calls``, and call
summaries outlive restarts.

**``/voice`` answers a CallSid once** (:meth:`CallRegistry.claim_answer`), so a
captured webhook replayed later cannot mint fresh stream tokens.  Twilio
itself re-sends ``/voice`` only when it got no answer (a timeout, a dropped
connection, a 5xx), and then no stream for that CallSid can have started: it
needs the TwiML Twilio never received.  That is the rule that tells a retry
from a replay: another ``/voice`` for a CallSid is answered again only while
no stream of it has started, within :data:`ANSWER_RETRY_WINDOW_S` of the first
answer and up to :data:`MAX_ANSWERS` times (Twilio retries at most 5 times);
anything else gets the refusal TwiML.  The answer is kept ``history_ttl_s``.
Each answer also holds a **reservation** (a call slot counted by
:meth:`CallRegistry.admitted` for ``max_calls``) until its stream starts or
its token expires.  When a stream starts, :meth:`CallRegistry.stream_started`
records its token (single use) and that the CallSid streamed.

Registry operations happen per call, never per
frame, and every caller bounds them with ``[state] timeout_s``: the audio
path never waits on the registry.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

#: Twilio's retries of an unanswered ``/voice`` come within this of the first answer.
ANSWER_RETRY_WINDOW_S = 60.0
#: ``/voice`` answers per CallSid at most: the first and Twilio's retries.
MAX_ANSWERS = 6


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

    async def claim_answer(self, call_sid: str, reserve_s: float) -> bool:
        """May ``/voice`` answer ``call_sid``?  The first time, or as a retry (see the
        module docstring); True also reserves a call slot for ``reserve_s``."""
        ...

    async def release_answer(self, call_sid: str) -> None:
        """Forget ``call_sid``'s answer and reservation: its /voice was answered busy after
        all (no token, no stream), so nothing of it may hold a ``max_calls`` slot or count
        against Twilio's retries of it."""
        ...

    async def stream_started(self, call_sid: str, token_id: str, token_ttl_s: float, once: bool) -> bool:
        """Record that ``call_sid``'s stream started with ``token_id`` ('' without one); release
        its reservation.  False when the token was used before, or (``once``) the CallSid
        already streamed."""
        ...

    async def admitted(self) -> int:
        """Live calls plus reservations, across every instance (for ``max_calls``)."""
        ...

    async def aclose(self) -> None:
        ...
