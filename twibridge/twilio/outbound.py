"""Outbound calls: dial a customer and bridge the answered call to the agent.

The call is created through Twilio's REST API with ``Url=<public_url>/voice``,
so when the callee answers Twilio fetches the very webhook inbound calls use
and gets the same ``<Connect><Stream>`` TwiML: an outbound call is, from the
bridge's side, just another call.  Hence the requirements: a reachable
``server.public_url`` (the bridge must be serving there) and REST
credentials.  ``twibridge call`` (``cli_outbound.py``) is the front end.
"""

from __future__ import annotations

from twibridge.config import Config
from twibridge.twilio.rest import TwilioRest, check_number

#: The webhook path of twibridge/server/app.py that answers with <Connect><Stream>.
VOICE_PATH = "/voice"


def voice_url(config: Config) -> str:
    return config.server.public_url.rstrip("/") + VOICE_PATH


def outbound_problems(config: Config, from_: str | None = None) -> list[str]:
    """Why an outbound call cannot be placed with this config (one line each)."""
    problems = []
    if not config.server.public_url:
        problems.append("server.public_url: required for outbound calls (Twilio fetches "
                        "<public_url>/voice when the callee answers); env TWIBRIDGE_SERVER_PUBLIC_URL")
    problems += TwilioRest(config).problems()
    if not (from_ or config.twilio.from_number):
        problems.append("twilio.from_number: required (or pass --from): the Twilio number to call from")
    return problems


#: ``AnsweredBy`` values (Twilio's answering-machine detection) that mean "not a person".
MACHINE_ANSWERS = frozenset({"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other",
                             "fax"})


def answered_by_machine(answered_by: str | None) -> bool:
    """Whether /voice's ``AnsweredBy`` says a machine (or fax) took the call.

    ``human`` and ``unknown`` (detection could not tell) get the agent: a
    person wrongly sent to voicemail is worse than an agent talking to one.
    """
    return answered_by in MACHINE_ANSWERS


async def place_call(config: Config, to: str, from_: str | None = None, *,
                     rest: TwilioRest | None = None, ring_timeout_s: int | None = None,
                     machine_detection: bool | None = None) -> str:
    """Create the outbound call; return its CallSid.

    ``machine_detection`` (default ``[outbound] machine_detection``) turns on
    Twilio's answering-machine detection: /voice then gets ``AnsweredBy``.

    Raises:
        ValueError: the config cannot place calls (see :func:`outbound_problems`).
        TwilioRestError: bad numbers or Twilio refused / failed.
    """
    problems = outbound_problems(config, from_)
    if problems:
        raise ValueError("; ".join(problems))
    rest = rest or TwilioRest(config)
    return await rest.create_call(
        check_number(to, "to"), check_number(from_ or config.twilio.from_number, "from"),
        url=voice_url(config), ring_timeout_s=ring_timeout_s,
        machine_detection=config.outbound.machine_detection if machine_detection is None else machine_detection,
    )
