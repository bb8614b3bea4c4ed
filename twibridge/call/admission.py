"""Before a call exists: the socket before ``start``, and the checks at ``start``.

Why here and not in the runner: each check answers one attack, and together
they are the door of every call (``docs/security.md``).  In order:

1. **Before ``start``** a socket is not a call: it is held by a
   :class:`PreStartGate` (capped globally and per remote address, never counted
   against ``max_calls``) for at most :data:`START_TIMEOUT_S`; anything but
   ``connected`` / ``start`` before ``start`` closes it (1008).
2. **Identity** (:func:`check_identity`): CallSid ``^CA[0-9a-f]{32}$``,
   AccountSid ``^AC[0-9a-f]{32}$``, From/To short and free of control
   characters (they reach logs, the registry and ``twibridge calls``).
3. **Account**: a ``start`` naming another account than ``[twilio]
   account_sid`` is refused (1008); REST call control always uses the
   configured account, never the stream's.
4. **Stream token** (when required): it binds AccountSid, CallSid, From, To,
   every ``<Parameter>`` and the issue time; single use, recorded in the
   registry (cluster-wide with Redis), and a CallSid streams once.
5. **Capacity**: ``max_calls`` again (live calls plus reservations of answered
   ``/voice`` webhooks): refused with 1013 and the fallback.

A refusal raises :class:`Refused` naming the outcome; the runner ends the call.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass
from typing import Awaitable, TypeVar

import trio

from twibridge.config import Config
from twibridge.logs import get_logger
from twibridge.runtime import Runtime
from twibridge.state.registry import CallRecord
from twibridge.twilio import protocol as tw
from twibridge.twilio import stream_token
from twibridge.twilio.twiml import voicemail

log = get_logger("twibridge.call.admission")

T = TypeVar("T")

#: A Twilio stream sends ``start`` at once (ms after the upgrade); a socket that does not is not Twilio.
START_TIMEOUT_S = 2.5
#: Sockets before ``start``, in this process and per remote address.  Behind a proxy
#: every socket has the proxy's address: the per-address cap then caps them all.
PRESTART_MAX = 64
PRESTART_MAX_PER_ADDRESS = 16
#: Close code "try again later": full at ``start``.
CLOSE_TRY_AGAIN = 1013
#: Longest From/To kept (E.164 is 16; ``client:…`` and ``sip:…`` identities are longer).
MAX_PARTY_CHARS = 128

CALL_SID = re.compile(r"^CA[0-9a-f]{32}\Z")
ACCOUNT_SID = re.compile(r"^AC[0-9a-f]{32}\Z")


class Refused(Exception):
    """The stream is refused at ``start``: ``outcome`` (``refused-…``), close ``code``, play the fallback?"""

    def __init__(self, outcome: str, reason: str, code: int, fallback: bool = False) -> None:
        super().__init__(reason)
        self.outcome, self.reason, self.code, self.fallback = outcome, reason, code, fallback


class PreStartGate:
    """Counts sockets that have not sent ``start`` yet; refuses past the caps."""

    def __init__(self, total: int = PRESTART_MAX, per_address: int = PRESTART_MAX_PER_ADDRESS) -> None:
        self.total, self.per_address = total, per_address
        self.held = 0
        self._by_address: dict[str, int] = {}

    def enter(self, address: str) -> PreStartTicket | None:
        """A ticket for one socket, or None when full (globally or for ``address``)."""
        if self.held >= self.total or self._by_address.get(address, 0) >= self.per_address:
            return None
        self.held += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1
        return PreStartTicket(self, address)

    def _leave(self, address: str) -> None:
        self.held -= 1
        left = self._by_address.get(address, 1) - 1
        if left:
            self._by_address[address] = left
        else:
            self._by_address.pop(address, None)


@dataclass
class PreStartTicket:
    gate: PreStartGate
    address: str
    released: bool = False

    def release(self) -> None:
        """Idempotent: at ``start``, or when the socket goes."""
        if not self.released:
            self.released = True
            self.gate._leave(self.address)


def clean_party(value: str) -> bool:
    """From/To as we keep them: short, and no control or format characters at all."""
    return len(value) <= MAX_PARTY_CHARS and not any(unicodedata.category(c)[0] == "C" for c in value)


def check_identity(start: tw.Start) -> None:
    """The ``start`` event's SIDs and parties, before anything uses them.

    Raises:
        RemoteProtocolError: a malformed CallSid/AccountSid, or a From/To we would not keep.
    """
    if not CALL_SID.match(start.call_sid):
        raise tw.RemoteProtocolError(f"callSid {start.call_sid[:40]!r} is not CA + 32 hex digits")
    if not ACCOUNT_SID.match(start.account_sid):
        raise tw.RemoteProtocolError(f"accountSid {start.account_sid[:40]!r} is not AC + 32 hex digits")
    for key in ("From", "To"):
        if not clean_party(start.custom_parameters.get(key, "")):
            raise tw.RemoteProtocolError(f"customParameters {key} is too long or has control characters")


def trusted(rt: Runtime) -> bool:
    """Is a stream's CallSid proven (so REST call control may act on it)?"""
    tcfg = rt.config.twilio
    return (tcfg.validate_signatures and tcfg.require_stream_token) or tcfg.trust_unsigned_streams


async def bounded(rt: Runtime, aw: Awaitable[T], default: T, op: str) -> T:
    """A registry operation under ``[state] timeout_s``; ``default`` (local state) on timeout."""
    with trio.move_on_after(rt.config.state.timeout_s):
        return await aw
    log.warning("registry.timeout", op=op)
    return default


async def admit(rt: Runtime, start: tw.Start, remote: str) -> None:
    """Checks 3–5 of the module docstring (identity was checked when ``start`` arrived).

    Raises:
        Refused: the stream may not become a call.
    """
    cfg = rt.config
    tcfg = cfg.twilio
    if tcfg.account_sid and start.account_sid != tcfg.account_sid:
        log.warning("ws.foreign_account", account_sid=start.account_sid, call_sid=start.call_sid, remote=remote)
        raise Refused("refused-unsigned", "start names another account than [twilio] account_sid", 1008)
    token_id = ""
    tokens = tcfg.validate_signatures and tcfg.require_stream_token
    if tokens:
        try:
            token_id = stream_token.check(
                tcfg.auth_token.get_secret_value(), start.custom_parameters.get(stream_token.PARAMETER),
                account_sid=start.account_sid, call_sid=start.call_sid, params=start.custom_parameters,
                now=time.time(), ttl_s=tcfg.stream_token_ttl_s)
        except stream_token.InvalidStreamToken as e:
            log.warning("ws.bad_stream_token", reason=str(e), call_sid=start.call_sid, remote=remote)
            raise Refused("refused-unsigned", str(e), 1008) from None
    if start.call_sid in rt.calls:
        log.warning("call.duplicate_refused", call_sid=start.call_sid, remote=remote)
        raise Refused("refused-duplicate", "a stream for this CallSid is already live", 1008)
    fresh = await bounded(rt, rt.registry.stream_started(start.call_sid, token_id, tcfg.stream_token_ttl_s,
                                                          once=tokens), True, "stream_started")
    if not fresh:
        log.warning("ws.stream_token_reused", call_sid=start.call_sid, remote=remote)
        raise Refused("refused-unsigned", "stream token already used (this CallSid has streamed)", 1008)


async def claim(rt: Runtime, record: CallRecord, remote: str) -> None:
    """Claim the CallSid in the registry (cluster-wide with Redis): one live stream per call;
    then ``max_calls`` again (a full bridge releases the claim).

    Raises:
        Refused: a stream for this CallSid is live (here or on another instance), or full.
    """
    claimed = False
    if record.call_sid not in rt.calls:
        # Registry unreachable: serve the call on local state.
        claimed = await bounded(rt, rt.registry.try_register(record), True, "register")
    if not claimed:
        log.warning("call.duplicate_refused", call_sid=record.call_sid, remote=remote)
        raise Refused("refused-duplicate", "a stream for this CallSid is already live", 1008)
    # Capacity after the claim, so a duplicate is told it is one (1008), not that we are full;
    # the count includes this stream's own record.
    cfg = rt.config
    admitted = await bounded(rt, rt.registry.admitted(), 0, "admitted")
    if max(admitted - 1, len(rt.calls)) >= cfg.server.max_calls:
        log.warning("call.full_at_start", call_sid=record.call_sid, admitted=admitted, max_calls=cfg.server.max_calls)
        await bounded(rt, rt.registry.unregister(record.call_sid), None, "unregister")
        raise Refused("refused-busy", f"max_calls ({cfg.server.max_calls}) reached at start", CLOSE_TRY_AGAIN,
                      fallback=True)


async def machine_answered(rt: Runtime, cfg: Config, call_sid: str, answered_by: str, to: str) -> str:
    """/voice for an outbound call a machine answered: the voicemail TwiML (or a hang-up),
    never the agent; the call goes into the history as ``voicemail`` / ``machine-hangup``."""
    left = bool(cfg.outbound.voicemail_say)
    outcome = "voicemail" if left else "machine-hangup"
    log.info("voice.machine_answered", call_sid=call_sid, answered_by=answered_by, outcome=outcome)
    summary = {"call_sid": call_sid, "outcome": outcome, "reason": f"answered by {answered_by}",
               "to_number": to, "duration_s": 0.0}
    with trio.move_on_after(cfg.state.timeout_s):
        await rt.registry.unregister(call_sid, summary)  # history only: no stream ever opens
    if rt.metrics:
        rt.metrics.call_ended(summary, [], [])
    return voicemail(cfg.outbound.voicemail_say)
