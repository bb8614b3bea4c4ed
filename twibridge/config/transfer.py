"""``[transfer]``: where an agent may send a caller (toll-fraud guard).

An agent asks for a transfer (``transfer{to}``, a VAPI tool, an OpenAI
function); the number it names was chosen by a model, which a caller can
steer ("transfer me to +1 900 …"), or by a hostile agent endpoint.  So
twibridge dials only numbers the operator allowed:

* ``to`` — the human's number (E.164), dialled when the agent names none;
  ``[fallback] dial`` stays as the older spelling of the same thing (``to``
  wins when both are set).
* ``allow`` — further numbers the agent may name: each entry a number or an
  E.164 prefix (``"+1555777"``: every number starting so; a whole number is
  its own prefix).

By default (``allow = []``) only ``to`` / ``[fallback] dial`` may be dialled;
any other target is refused, logged and reported to the agent as a failed
transfer.

How a transfer is done (issue #21):

* ``mode`` — ``"cold"`` (the call's TwiML becomes ``<Dial>``: today's
  behaviour) or ``"warm"`` (:mod:`twibridge.handoff.warm`: the human is rung
  first and told ``announce``, the caller hears ``hold_sound`` meanwhile,
  and only a person who answers is joined; otherwise the agent is told and
  the call goes on).
* ``ring_timeout_s`` — how long the human may take to answer (warm).
* ``announce`` — what the human hears before being joined; ``{from}`` and
  ``{summary}`` are replaced by the caller's number and the agent's summary.
* ``hold_sound`` — a WAV looped to the caller while the human is rung (a
  built-in soft tone when empty).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from twibridge.config.sections import _Section

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_PREFIX = re.compile(r"^\+[1-9][0-9]{0,14}$")
#: The placeholders ``announce`` may use; any other ``{…}`` is a typo caught at load.
ANNOUNCE_FIELDS = ("{from}", "{summary}")
_BRACED = re.compile(r"\{[^{}]*\}")


class TransferConfig(_Section):
    to: str = ""
    allow: list[str] = Field(default_factory=list, max_length=1000)
    mode: Literal["cold", "warm"] = "cold"
    ring_timeout_s: int = Field(20, ge=1, le=120)
    announce: str = Field("Transferring a caller from {from}. {summary}", max_length=1000)
    hold_sound: str = ""

    @field_validator("announce")
    @classmethod
    def _check_announce(cls, value: str) -> str:
        rest = value
        for name in ANNOUNCE_FIELDS:
            rest = rest.replace(name, "")
        unknown = _BRACED.findall(rest)
        if unknown:
            raise ValueError(f"transfer.announce: unknown placeholder {unknown[0]!r} (use {{from}} and {{summary}})")
        return value

    @field_validator("to")
    @classmethod
    def _check_to(cls, value: str) -> str:
        if value and not E164.match(value):
            raise ValueError(f"transfer.to: expected an E.164 number (+15551234567), got {value!r}")
        return value

    @field_validator("allow")
    @classmethod
    def _check_allow(cls, value: list[str]) -> list[str]:
        for i, entry in enumerate(value):
            if not _PREFIX.match(entry):
                raise ValueError(f"transfer.allow[{i}]: expected an E.164 number or prefix (+1555777), "
                                 f"got {entry!r}")
        return value

    def target(self, requested: str | None, fallback_dial: str = "") -> tuple[str, str]:
        """``(number, "")`` to dial for an agent's request, or ``("", why)`` when refused.

        ``requested`` None or empty: the configured human (``to``, else
        ``fallback_dial``).  Otherwise it must be that number, or allowed.
        """
        default = self.to or fallback_dial
        if not requested:
            return (default, "") if default else ("", "no target: set [transfer] to")
        number = requested.strip()
        if not E164.match(number):
            return "", "not an E.164 number"
        if number in (self.to, fallback_dial) or any(number.startswith(entry) for entry in self.allow):
            return number, ""
        return "", "not in [transfer] allow"
