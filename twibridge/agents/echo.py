"""The embedded echo agent: repeats each caller utterance once they go quiet.

It needs no key, account or network, so it makes the whole bridge testable
and demoable: turn detection (the same :class:`~twibridge.audio.vad.TurnDetector`
as the bridge's local VAD), pacing, marks and ``clear`` are all exercised by
``twibridge simulate-call``.  Its end-of-turn is in *audio time* (bytes / 8),
never wall time, so a run at ``--speed 8`` behaves exactly like one at 1×.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping

import trio

from twibridge.agents.base import (
    AgentDisconnected, AgentEvent, AudioOut, CallInfo, ReplyDone,
)
from twibridge.audio.g711 import ulaw_dbfs
from twibridge.config import Config
from twibridge.audio.vad import SpeechEnded, TurnDetector
from twibridge.audio.vad import SpeechStarted as VadSpeechStarted

FRAME_MS = 20
#: Reply audio is handed to the bridge in pieces of this size (the bridge
#: re-chunks for Twilio anyway; this keeps single events small).
REPLY_PIECE_BYTES = 4000


class EchoSession:
    """One call's echo agent, entirely in-process."""

    def __init__(self, config: Config, call: CallInfo) -> None:
        t = config.turns
        self._vad = TurnDetector(
            vad_threshold=t.vad_threshold, debounce_ms=t.debounce_ms,
            end_of_turn_ms=t.end_of_turn_ms, echo_margin_db=t.echo_margin_db,
        )
        self._max_frames = int(config.agent.echo.max_utterance_s * 1000 / FRAME_MS)
        # Pre-roll: the debounce delays the start decision; keep the audio.
        self._preroll: deque[bytes] = deque(maxlen=t.debounce_ms // FRAME_MS + 5)
        self._utterance: list[bytes] | None = None
        self._t_ms = 0
        self._replies = 0
        self._send, self._recv = trio.open_memory_channel[AgentEvent](256)
        self._closed = False

    async def send_audio(self, ulaw: bytes) -> None:
        ev = self._vad.feed(ulaw_dbfs(ulaw), self._t_ms)
        self._t_ms += len(ulaw) // 8
        if self._utterance is not None:
            if len(self._utterance) < self._max_frames:
                self._utterance.append(ulaw)
        else:
            self._preroll.append(ulaw)
        if isinstance(ev, VadSpeechStarted):
            # No SpeechStarted event: the bridge's own VAD (with echo gating)
            # handles barge-in; this detector cannot see the agent's output.
            self._utterance = list(self._preroll)
            self._preroll.clear()
        elif isinstance(ev, SpeechEnded) and self._utterance is not None:
            # Drop the trailing quiet that ended the turn.
            quiet_frames = max(0, (self._t_ms - ev.end_ms) // FRAME_MS)
            audio = b"".join(self._utterance[: len(self._utterance) - quiet_frames or None])
            self._utterance = None
            self._replies += 1
            item = f"echo-{self._replies}"
            for i in range(0, len(audio), REPLY_PIECE_BYTES):
                await self._send.send(AudioOut(item, audio[i : i + REPLY_PIECE_BYTES]))
            await self._send.send(ReplyDone(item))

    async def send_dtmf(self, digit: str) -> None:
        return None

    async def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        return None  # no conversation state to truncate

    async def mark_played(self, item_id: str, played_ms: int) -> None:
        return None

    async def prompt(self, instruction: str) -> bool:
        return False  # the echo agent has no voice of its own: the bridge plays a tone

    async def send_tool_result(self, call_id: str, name: str, output: Mapping[str, Any]) -> None:
        return None  # no configured functions yet: tools are the executor's (issue #17)

    async def receive(self) -> AgentEvent:
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise AgentDisconnected("echo agent closed") from None

    async def aclose(self) -> None:
        self._closed = True
        await self._send.aclose()
        await self._recv.aclose()


class EchoProvider:
    name = "echo"

    def __init__(self, config: Config) -> None:
        self.config = config

    async def connect(self, call: CallInfo, nursery: trio.Nursery) -> EchoSession:
        return EchoSession(self.config, call)
