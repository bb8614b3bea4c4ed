"""Call control on a live call through Twilio's REST API: hang up, transfer, fallback.

Each action replaces what Twilio does with the call, which also ends its
Media Stream; the call runner records the outcome *before* acting so the
stream's ``stop`` that follows is not mistaken for the caller hanging up.
Without REST credentials nothing is attempted (a warning says why) and the
runner falls back to closing the socket, whose TwiML continues with
``<Hangup/>``.
"""

from __future__ import annotations

import trio

from twibridge.config import Config
from twibridge.logs import get_logger
from twibridge.twilio.rest import TwilioRest, TwilioRestError
from twibridge.twilio.twiml import busy

log = get_logger("twibridge.control")


class CallControl:
    def __init__(self, config: Config, call_sid: str, account_sid: str = "") -> None:
        self.config = config
        self.call_sid = call_sid
        self.account_sid = account_sid or None

    def _rest(self, action: str) -> TwilioRest | None:
        rest = TwilioRest(self.config)
        problems = rest.problems()
        if problems:
            log.warning("control.rest_unavailable", action=action, problems=problems)
            return None
        return rest

    async def hangup(self) -> bool:
        """End the call (an already-ended call counts as done)."""
        rest = self._rest("hangup")
        if rest is None:
            return False
        try:
            await rest.hangup(self.call_sid, account_sid=self.account_sid)
            return True
        except TwilioRestError as exc:
            log.warning("control.hangup_failed", error=exc.message)
            return False

    async def transfer(self, to: str) -> bool:
        """Replace the call's TwiML with ``<Dial>`` to ``to``; False if it did not happen."""
        if not to:
            log.warning("control.transfer_no_target", hint="set [fallback] dial or have the agent name a number")
            return False
        rest = self._rest("transfer")
        if rest is None:
            return False
        try:
            await rest.transfer(self.call_sid, to, account_sid=self.account_sid)
            return True
        except TwilioRestError as exc:
            log.error("control.transfer_failed", to=to, error=exc.message)
            return False

    async def fallback(self) -> bool:
        """Play ``[fallback] say`` (then dial ``[fallback] dial``) instead of dead air."""
        fb = self.config.fallback
        if not (fb.say or fb.dial):
            return False
        rest = self._rest("fallback")
        if rest is None:
            return False
        # Shielded: this runs while the call is being torn down.
        with trio.move_on_after(self.config.twilio.rest_timeout_s + 1, shield=True):
            try:
                await rest.update_twiml(self.call_sid, busy(fb.say, fb.dial), account_sid=self.account_sid)
                log.info("control.fallback_played", dial=bool(fb.dial))
                return True
            except TwilioRestError as exc:
                log.error("control.fallback_failed", error=exc.message)
        return False
