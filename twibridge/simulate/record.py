"""What a simulated call is asked to do, and what it recorded.

Plain data shared by the driver (:mod:`.caller`), the report
(:mod:`.report`) and the tests; no I/O here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Sequence

from twibridge.simulate.twiml import new_sid


class Outcome(str, enum.Enum):
    COMPLETED = "completed"  # the caller hung up after the audio + tail
    SERVER_CLOSED = "server-closed"  # the bridge closed the stream normally (1000/1001)
    ABNORMAL_CLOSE = "server-closed-abnormally"  # any other close code, or a dropped socket
    REFUSED = "refused"  # /voice failed, bad TwiML, or the upgrade was rejected
    NO_STREAM = "no-stream"  # TwiML without <Connect> (e.g. busy: <Say> + <Hangup>)
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class CallOptions:
    """How the simulated caller behaves.

    ``dtmf`` holds ``(seconds, digit)`` on the audio timeline.
    ``webhook_url`` is the URL Twilio *thinks* it requested (the one signed);
    default: the URL posted to.  Set it to ``public_url + "/voice"`` when
    the bridge sits behind a proxy or has ``server.public_url``.
    ``timeout_s`` bounds the whole call; default: audio length / speed + margin.
    """

    from_number: str = "+15005550006"
    to_number: str = "+15005550001"
    dtmf: Sequence[tuple[float, str]] = ()
    tail_s: float = 3.0
    speed: float = 1.0
    timeout_s: float | None = None
    voice_path: str = "/voice"
    webhook_url: str | None = None
    account_sid: str = field(default_factory=lambda: new_sid("AC"))


@dataclass
class CallResult:
    """Everything that happened, on the audio timeline; input to the report."""

    call_sid: str
    account_sid: str
    stream_sid: str
    caller_ulaw: bytes  # what the caller sent, tail included
    outcome: Outcome = Outcome.COMPLETED
    detail: str = ""
    frames_sent: int = 0
    frames_received: int = 0
    marks_received: int = 0
    marks_echoed: int = 0
    clears: list[float] = field(default_factory=list)  # t_ms of each clear received
    call_ms: float = 0.0  # timeline length: when the call ended
    heard_ulaw: bytes = b""
    played_intervals: list[tuple[float, float]] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)
    protocol_errors: list[str] = field(default_factory=list)
    twiml: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.COMPLETED, Outcome.SERVER_CLOSED) and not self.protocol_errors
