"""One call's transfers to a human: cold (``<Dial>``) or warm (ring, brief, join).

An agent's :class:`~twibridge.agents.base.TransferRequest` is queued here
(:meth:`Handoff.submit` never waits: the agent's events keep flowing) and
run by the call's own task :meth:`Handoff.run`, one at a time:

* **cold** (``[transfer] mode = "cold"``): the call's TwiML becomes
  ``<Dial>`` (:meth:`twibridge.call.control.CallControl.transfer`), as before.
* **warm**: the caller goes on hold (the hold sound plays, the agent's audio
  is held back and it hears nothing), the human is rung
  (:func:`twibridge.handoff.warm.ring`) and hears ``announce`` with the
  agent's summary; once a person answers, the caller's call joins the same
  conference, the stream ends as ``transferred``.  Otherwise the hold ends
  and the agent gets the outcome as its transfer's result ("nobody answered
  (busy)"), so it can take a message or offer a callback: the call goes on.

Every attempt lands in the report's ``transfers`` (mode, target, outcome,
ring time).  The summary is the caller's business: it is spoken to the human
and never logged (its length is).
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import trio

from twibridge.agents.base import CallInfo, TransferRequest
from twibridge.audio.tones import hold_tone
from twibridge.config import Config
from twibridge.handoff import conference as conf
from twibridge.handoff.warm import HumanLeg, end_leg, ring
from twibridge.logs import get_logger
from twibridge.twilio.rest import TwilioRest, TwilioRestError, check_number

log = get_logger("twibridge.handoff")

#: The hold sound's item id: a bridge item (the agent never hears of it).
HOLD_ITEM = "bridge:hold"
#: What the agent is told when a person did not come to the phone.
NOBODY = {"busy": "the line was busy", "no-answer": "nobody answered", "ring-timeout": "nobody answered in time",
          "machine": "a voicemail answered, not a person", "canceled": "the call to them was canceled",
          "failed": "the call to them could not be placed", "hung-up": "they hung up before being joined"}


class Control(Protocol):
    transfer_error: str

    async def transfer(self, requested: str | None) -> bool: ...
    def rest_for(self, action: str) -> TwilioRest | None: ...


class HoldPlayer(Protocol):
    def hold(self, item_id: str, loop: bytes) -> None: ...
    async def unhold(self) -> None: ...
    async def wait_played(self, limit_s: float = 10.0) -> None: ...


class Listener(Protocol):
    async def transfer_failed(self, reason: str) -> None: ...


class Records(Protocol):
    transfer_to: str | None
    transfers: list[dict[str, Any]]


class CallSide(Protocol):
    """What a transfer needs of its call (call/runner.py's ``Call``)."""

    cfg: Config
    transferring: bool

    @property
    def info(self) -> CallInfo | None: ...
    @property
    def control(self) -> Control | None: ...
    @property
    def speaker(self) -> HoldPlayer: ...
    @property
    def agent(self) -> Listener | None: ...
    @property
    def records(self) -> Records: ...

    def end(self, outcome: str, reason: str, code: int = 1000) -> None: ...


class Handoff:
    def __init__(self, call: CallSide, hold_sound: bytes | None = None) -> None:
        self.call = call
        self.hold_sound = hold_sound or hold_tone()  # [transfer] hold_sound, or the built-in tone
        self.leg: HumanLeg | None = None  # the human leg ringing now (warm)
        self._send, self._recv = trio.open_memory_channel[TransferRequest](1)

    def submit(self, ev: TransferRequest) -> None:
        """Queue the agent's request; one at a time (a second while one runs is dropped, logged)."""
        try:
            self._send.send_nowait(ev)
        except trio.WouldBlock:
            log.warning("transfer.already_pending")

    def on_status(self, form: Mapping[str, Any]) -> bool:
        """A signed status callback for this call's human leg; False when it is not ours."""
        leg = self.leg
        if leg is None or not leg.sid or str(form.get("CallSid", "")) != leg.sid:
            return False
        leg.update(str(form.get("CallStatus", "")), str(form.get("AnsweredBy", "")))
        return True

    async def run(self) -> None:
        """The call's transfer task: each request in turn."""
        async for ev in self._recv:
            await self.call.speaker.wait_played()  # the agent's "let me get someone" plays out first
            if self.call.cfg.transfer.mode == "warm":
                await self._warm(ev)
            else:
                await self._cold(ev)

    def _attempt(self, mode: str, to: str, outcome: str, ring_ms: int | None = None) -> None:
        self.call.records.transfers.append({"mode": mode, "to": to or None, "outcome": outcome, "ring_ms": ring_ms})

    async def _failed(self, reason: str) -> None:
        listener = self.call.agent
        if listener is not None:  # the call goes on with the agent, who tells the caller
            await listener.transfer_failed(reason)

    async def _cold(self, ev: TransferRequest) -> None:
        call, control = self.call, self.call.control
        assert control is not None
        to = call.cfg.transfer.target(ev.to, call.cfg.fallback.dial)[0]
        call.transferring = True  # before acting: the stop that follows is no hang-up
        if await control.transfer(ev.to):
            self._attempt("cold", to, "dialed")
            call.records.transfer_to = to
            call.end("transferred", "transferred to a human")
            return
        call.transferring = False
        self._attempt("cold", to, "refused" if not to else "rest-error")
        await self._failed(control.transfer_error)

    async def _warm(self, ev: TransferRequest) -> None:
        call, cfg, info = self.call, self.call.cfg, self.call.info
        assert info is not None and call.control is not None
        to, why = cfg.transfer.target(ev.to, cfg.fallback.dial)
        if not to:
            log.warning("control.transfer_refused", requested=(ev.to or "")[:32], reason=why)
            self._attempt("warm", "", "refused")
            return await self._failed(f"transfer refused: {why}")
        rest = call.control.rest_for("transfer")
        problem = _warm_problem(cfg, info)
        if rest is None or problem:
            if problem:
                log.warning("transfer.unavailable", reason=problem)
            self._attempt("warm", to, "unavailable")
            return await self._failed("transfer unavailable (no REST call control for this call)")
        summary = conf.clean_summary(ev.summary)
        announce = conf.render_announce(cfg.transfer.announce, info.from_number, summary)
        name = conf.conference_name(info.call_sid)
        call.speaker.hold(HOLD_ITEM, self.hold_sound)
        log.info("transfer.warm_started", to=to, summary_chars=len(summary))
        started = trio.current_time()
        self.leg = leg = HumanLeg()
        outcome, joined = "caller-hung-up", False  # what a cancel (the call ending) leaves
        try:
            try:
                outcome = await ring(rest, leg, to=to, from_=info.to_number, twiml=conf.human_twiml(announce, name),
                                     status_callback=conf.status_url(cfg.server.public_url, info.call_sid),
                                     ring_timeout_s=cfg.transfer.ring_timeout_s)
            except TwilioRestError as exc:
                log.error("transfer.ring_failed", to=to, error=exc.message)
                outcome = "rest-error"
            if outcome == conf.ANSWERED:
                call.transferring = True  # before acting: the stop that follows is no hang-up
                try:
                    await rest.update_twiml(info.call_sid, conf.caller_twiml(name))
                    joined = True
                except TwilioRestError as exc:
                    call.transferring = False
                    log.error("transfer.join_failed", error=exc.message)
                    outcome = "rest-error"
        finally:
            self.leg = None
            if not joined:  # the human is not left alone in a conference nobody joins
                await end_leg(rest, leg)
            ring_ms = round((trio.current_time() - started) * 1000)
            self._attempt("warm", to, outcome, ring_ms)
            log.info("transfer.warm_ended", outcome=outcome, ring_ms=ring_ms)
        if joined:
            call.records.transfer_to = to
            call.end("transferred", "warm transfer: the human answered")
            return
        await call.speaker.unhold()
        nobody = NOBODY.get(outcome)
        await self._failed(f"{nobody} ({outcome}); offer to take a message or a callback" if nobody
                           else "transfer failed at Twilio")


def _warm_problem(cfg: Config, info: CallInfo) -> str:
    """Why this call cannot be warm-transferred (empty when it can)."""
    if not cfg.server.public_url:
        return "server.public_url is not set (Twilio posts the human leg's status there)"
    try:
        check_number(info.to_number, "the number the caller dialed")
    except TwilioRestError as exc:
        return exc.message  # the human's leg is placed From it
    return ""


def deliver_status(calls: Mapping[str, Any], caller_sid: str, form: Mapping[str, Any]) -> bool:
    """Hand ``/transfer-status`` to the call it names, if it lives in this process."""
    handoff = getattr(calls.get(caller_sid), "handoff", None)
    return isinstance(handoff, Handoff) and handoff.on_status(form)
