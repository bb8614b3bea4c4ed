"""``[outbound]``: what ``twibridge call`` asks of Twilio for calls we place."""

from __future__ import annotations

from twibridge.config.sections import _Section


class OutboundConfig(_Section):
    #: Twilio's answering-machine detection (``MachineDetection=DetectMessageEnd``):
    #: on a machine the call plays ``voicemail_say`` after the beep instead of
    #: starting the agent on a recording.  ``twibridge call --machine-detection`` too.
    machine_detection: bool = False
    #: The message left after the beep; empty: hang up on a machine.
    voicemail_say: str = ""
