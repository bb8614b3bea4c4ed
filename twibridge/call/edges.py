"""The call's edges: no dead air at pickup, check-ins when the line goes quiet.

* **Pickup**: ``[calls] greeting_sound`` plays the instant the stream starts,
  while the agent is still connecting; ``[agent] greeting`` (passed to the
  provider in :class:`~twibridge.agents.base.CallInfo`) follows it, in the
  speaker's queue.  The time from ``start`` to the first audio sent is the
  call's ``pickup_to_audio_ms``.
* **Idle**: :class:`~twibridge.call.idle.IdleWatch` decides when; this
  module asks the agent (or plays a tone) and, after the last check-in, has
  the agent say goodbye, lets it play, and ends the call as ``caller-idle``.

Bridge-played audio is a reply of its own whose item id starts with
``bridge:``: a barge-in cuts it like any reply, but the agent is never told
about it (it is not the agent's item).
"""

from __future__ import annotations

from typing import Protocol

import trio

from twibridge.agents.base import ToolSpec
from twibridge.agents.supervisor import AgentSupervisor
from twibridge.audio.dtmf import InvalidDigits, dtmf_ulaw
from twibridge.audio.tones import tone_ulaw
from twibridge.audio.vad import TurnDetector
from twibridge.call.control import CallControl
from twibridge.call.idle import IdleWatch
from twibridge.call.speaker import Speaker
from twibridge.logs import get_logger

log = get_logger("twibridge.call")

BRIDGE_ITEM = "bridge:"
#: How long the goodbye may take to start, then to play, before we hang up anyway.
GOODBYE_START_S = 5.0
GOODBYE_PLAY_S = 15.0


#: The built-in ``send_dtmf`` tool, as declared to a model (run by :meth:`Edges.send_dtmf`).
SEND_DTMF = ToolSpec(
    name="send_dtmf",
    description="Press keys on the phone line (in-band DTMF tones), e.g. to get through another company's "
    "phone menu. Digits 0-9, *, #, A-D.",
    parameters={"type": "object", "properties": {"digits": {"type": "string", "description": "e.g. \"1\" or \"123#\""}},
                "required": ["digits"]},
)


def is_bridge_item(item_id: str) -> bool:
    return item_id.startswith(BRIDGE_ITEM)


class CallView(Protocol):
    """What the edges need of the call (call/runner.py's Call)."""

    vad: TurnDetector
    agent: AgentSupervisor | None
    control: CallControl | None

    def end(self, outcome: str, reason: str) -> None: ...


class Edges:
    """One call's pickup sound and idle check-ins."""

    def __init__(self, speaker: Speaker, idle: IdleWatch) -> None:
        self.speaker = speaker
        self.idle = idle
        self.started_at: float | None = None
        self._clips = 0

    def play(self, kind: str, ulaw: bytes) -> None:
        """Queue a sound the bridge plays itself (``kind``: greeting, tone, dtmf, …)."""
        self._clips += 1
        if not self.speaker.play_clip(f"{BRIDGE_ITEM}{kind}:{self._clips}", ulaw):
            log.warning("call.sound_dropped", kind=kind, reason="too many queued replies")

    def send_dtmf(self, digits: object) -> dict[str, object]:
        """The ``send_dtmf`` tool: queue the tones, or tell the agent why not."""
        if not isinstance(digits, str):
            return {"error": "digits must be a string"}
        try:
            audio = dtmf_ulaw(digits)
        except InvalidDigits as exc:
            return {"error": str(exc)}
        self.play("dtmf", audio)
        log.info("call.dtmf_sent", digits=len(digits))  # how many, not which: they may be a PIN
        return {"sent": True, "duration_ms": len(audio) // 8}

    def on_start(self, greeting_sound: bytes | None) -> None:
        self.started_at = trio.current_time()
        self.idle.touch(self.started_at)
        if greeting_sound:
            self.play("greeting", greeting_sound)

    @property
    def pickup_to_audio_ms(self) -> float | None:
        first = self.speaker.stats.first_audio_at
        if first is None or self.started_at is None:
            return None
        return round((first - self.started_at) * 1000, 1)

    def heard_until(self, now: float, caller_speaking: bool) -> float:
        """Until when someone is audible, as far as the call knows at ``now``."""
        if caller_speaking or not self.speaker.idle(now):
            return max(now, self.speaker.playout.play_end)
        return self.idle.last_activity

    async def check_ins(self, call: CallView) -> None:
        """The call's idle check-ins, then the goodbye that ends it (a task of the call's nursery)."""
        await self.idle.run(lambda now: self.heard_until(now, call.vad.in_speech),
                            lambda text: self.check_in(call.agent, text),
                            lambda text: self.goodbye(call.agent, call.control, call, text))

    async def check_in(self, agent: AgentSupervisor | None, instruction: str) -> None:
        asked = agent is not None and await agent.prompt(instruction)
        log.info("call.idle_check_in", n=self.idle.check_ins, by="agent" if asked else "tone")
        if not asked:
            self.play("tone", tone_ulaw())

    async def goodbye(self, agent: AgentSupervisor | None, control: CallControl | None, call: CallView,
                      instruction: str) -> None:
        """The last check-in went unanswered: a goodbye (played to its end), then hang up."""
        log.info("call.idle_goodbye", check_ins=self.idle.check_ins)
        if agent is not None and await agent.prompt(instruction):
            with trio.move_on_after(GOODBYE_START_S):  # wait for the goodbye to start playing
                while self.speaker.idle(trio.current_time()):
                    await trio.sleep(0.05)  # as wait_played does: the speaker has no event for it
        await self.speaker.wait_played(GOODBYE_PLAY_S)
        if control is not None:
            await control.hangup()
        call.end("caller-idle", f"no answer after {self.idle.check_ins} check-ins")
