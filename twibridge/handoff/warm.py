"""Ringing the human for a warm transfer, on Trio: one leg, watched until it answers or fails.

The human's leg is created through the REST API with the conference TwiML
(:func:`~twibridge.handoff.conference.human_twiml`), Twilio's own ring
timeout, answering-machine detection (``Enable``: only *whether* a person
answered matters) and a signed ``StatusCallback`` under ``public_url``.

Its status comes two ways, and the first to say wins: the status callback
(``POST /transfer-status``, signed, delivered to the call by
:meth:`HumanLeg.update`), and a read of the call resource every
:data:`POLL_S` — a callback may land on another worker or host than the one
serving the call, or be lost, and a caller must not wait on it.

Whatever ends the wait other than a person answering (busy, no answer, a
machine, the bridge's own deadline, the caller hanging up and cancelling
the call), the leg is ended (shielded, bounded) so no phone keeps ringing
for a caller who is gone.
"""

from __future__ import annotations

import trio

from twibridge.handoff.conference import ANSWERED, FAILED_STATUSES, ring_outcome
from twibridge.logs import get_logger
from twibridge.twilio.rest import TwilioRest, TwilioRestError

log = get_logger("twibridge.handoff")

#: How often the bridge reads the leg's status itself (callbacks may go elsewhere).
POLL_S = 2.0
#: Answering-machine detection's time to listen once answered (Twilio's
#: ``MachineDetectionTimeout``; the bridge waits this long past the ring timeout).
AMD_TIMEOUT_S = 8
#: Bound on ending a leg during teardown.
END_LEG_TIMEOUT_S = 5.0
#: A leg's status events Twilio posts to the callback.
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")


class HumanLeg:
    """The human's leg of one warm transfer: its CallSid and latest known status."""

    def __init__(self) -> None:
        self.sid = ""
        self.status = ""
        self.answered_by = ""
        self.ended = False  # end_leg ran
        self._changed = trio.Event()

    def update(self, status: str, answered_by: str) -> None:
        """A status from the callback or a poll; an ``AnsweredBy`` once said is kept."""
        self.status = status or self.status
        self.answered_by = answered_by or self.answered_by
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        await self._changed.wait()

    @property
    def outcome(self) -> str | None:
        return ring_outcome(self.status, self.answered_by)


async def ring(rest: TwilioRest, leg: HumanLeg, *, to: str, from_: str, twiml: str, status_callback: str,
               ring_timeout_s: int) -> str:
    """Ring the human and wait: ``answered``, or why not (``busy``, ``no-answer``,
    ``failed``, ``canceled``, ``machine``, ``hung-up``, ``ring-timeout``).

    On any outcome but ``answered`` — and when cancelled — the leg is ended
    before this returns.  An ``answered`` leg is the caller's to join (or end).

    Raises:
        TwilioRestError: the leg could not be created.
    """
    leg.sid = await rest.create_call(to, from_, twiml=twiml, status_callback=status_callback,
                                     status_callback_events=STATUS_EVENTS, ring_timeout_s=ring_timeout_s,
                                     machine_detection=True, detect_message_end=False,
                                     machine_detection_timeout_s=AMD_TIMEOUT_S)
    log.info("transfer.ringing", leg_sid=leg.sid, to=to, ring_timeout_s=ring_timeout_s)
    outcome: str | None = None
    try:
        with trio.move_on_after(ring_timeout_s + AMD_TIMEOUT_S):
            while (outcome := leg.outcome) is None:
                with trio.move_on_after(POLL_S) as waited:
                    await leg.changed()
                if waited.cancelled_caught:
                    await _poll(rest, leg)
        return outcome or "ring-timeout"
    finally:
        if outcome != ANSWERED:
            await end_leg(rest, leg)


async def _poll(rest: TwilioRest, leg: HumanLeg) -> None:
    try:
        status, answered_by = await rest.call_status(leg.sid)
    except TwilioRestError as exc:  # the callback may still say; the deadline bounds the wait
        log.warning("transfer.status_read_failed", leg_sid=leg.sid, error=exc.message)
        return
    leg.update(status, answered_by)


async def end_leg(rest: TwilioRest, leg: HumanLeg) -> None:
    """Stop the human's phone (ringing: canceled; answered: completed); shielded, bounded."""
    if leg.ended or not leg.sid or leg.status == "completed" or leg.status in FAILED_STATUSES:
        return
    leg.ended = True
    with trio.move_on_after(END_LEG_TIMEOUT_S, shield=True):
        try:
            await rest.end_leg(leg.sid, answered=leg.status == "in-progress")
            log.info("transfer.leg_ended", leg_sid=leg.sid, status=leg.status or "unknown")
        except TwilioRestError as exc:
            log.warning("transfer.leg_end_failed", leg_sid=leg.sid, error=exc.message)
