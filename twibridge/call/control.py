"""Call control on a live call through Twilio's REST API: hang up, transfer, fallback.

Each action replaces what Twilio does with the call, which also ends its
Media Stream; the call runner records the outcome *before* acting so the
stream's ``stop`` that follows is not mistaken for the caller hanging up.
Without REST credentials nothing is attempted (a warning says why) and the
runner falls back to closing the socket, whose TwiML continues with
``<Hangup/>``.

Two guards (issue #23): REST always acts under ``[twilio] account_sid`` —
never an AccountSid read from the unauthenticated ``start`` event — and only
for streams whose CallSid is proven (a stream token, or ``[twilio]
trust_unsigned_streams = true`` set on purpose): otherwise anyone holding the
upgrade signature could name any CallSid of the account and hang it up,
transfer it or redirect it.  An untrusted call still ends when the agent
hangs up: closing the stream runs the TwiML's ``<Hangup/>``.  And a transfer
dials only what ``[transfer]`` allows (:mod:`twibridge.config.transfer`).
"""

from __future__ import annotations

import trio

from twibridge.config import Config
from twibridge.logs import get_logger
from twibridge.twilio.rest import TwilioRest, TwilioRestError
from twibridge.twilio.twiml import busy

log = get_logger("twibridge.control")


class CallControl:
    def __init__(self, config: Config, call_sid: str, *, trusted: bool) -> None:
        self.config = config
        self.call_sid = call_sid
        self.trusted = trusted
        #: Why the last :meth:`transfer` did not happen (for the agent).
        self.transfer_error = ""

    def rest_for(self, action: str) -> TwilioRest | None:
        """A REST client for ``action`` on this call, or None (logged) when this
        stream's CallSid is not proven or REST is not configured."""
        if not self.trusted:
            log.warning("control.untrusted_stream", action=action,
                        hint="no stream token proves this CallSid: set [twilio] trust_unsigned_streams = true "
                             "to allow REST call control anyway")
            return None
        rest = TwilioRest(self.config)
        problems = rest.problems()
        if problems:
            log.warning("control.rest_unavailable", action=action, problems=problems)
            return None
        return rest

    async def hangup(self) -> bool:
        """End the call (an already-ended call counts as done)."""
        rest = self.rest_for("hangup")
        if rest is None:
            return False
        try:
            await rest.hangup(self.call_sid)
            return True
        except TwilioRestError as exc:
            log.warning("control.hangup_failed", error=exc.message)
            return False

    async def transfer(self, requested: str | None) -> bool:
        """Replace the call's TwiML with ``<Dial>`` to what ``[transfer]`` allows for
        ``requested`` (None: the configured human); False if it did not happen
        (:attr:`transfer_error` says why)."""
        to, why = self.config.transfer.target(requested, self.config.fallback.dial)
        if not to:
            self.transfer_error = f"transfer refused: {why}"
            if requested:
                log.warning("control.transfer_refused", requested=requested[:32], reason=why)
            else:
                log.warning("control.transfer_no_target", hint="set [transfer] to (or [fallback] dial)")
            return False
        rest = self.rest_for("transfer")
        if rest is None:
            self.transfer_error = "transfer unavailable (no REST call control for this call)"
            return False
        try:
            await rest.transfer(self.call_sid, to)
            return True
        except TwilioRestError as exc:
            self.transfer_error = "transfer failed at Twilio"
            log.error("control.transfer_failed", to=to, error=exc.message)
            return False

    async def fallback(self) -> bool:
        """Play ``[fallback] say`` (then dial ``[fallback] dial``) instead of dead air."""
        fb = self.config.fallback
        if not (fb.say or fb.dial):
            return False
        rest = self.rest_for("fallback")
        if rest is None:
            return False
        # Shielded: this runs while the call is being torn down.
        with trio.move_on_after(self.config.twilio.rest_timeout_s + 1, shield=True):
            try:
                await rest.update_twiml(self.call_sid, busy(fb.say, fb.dial))
                log.info("control.fallback_played", dial=bool(fb.dial))
                return True
            except TwilioRestError as exc:
                log.error("control.fallback_failed", error=exc.message)
        return False
