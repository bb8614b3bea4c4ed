"""The thinking sound: no dead air while a tool runs.

Once tools have been running for ``thinking_after_ms`` (a quick lookup stays
silent), the ``[tools] thinking_sound`` loops to the caller until no tool is
running any more; a barge-in or the agent's own next reply stops it sooner
(the player's job: the call's speaker treats it as a reply that is not the
agent's).  One start per busy spell: after a barge-in it stays quiet.

The player is a small protocol so this module needs no speaker (and tests
need no call): ``start_filler`` queues a looped stream like a reply,
``stop_filler`` ends it at once.
"""

from __future__ import annotations

import functools
import itertools
from typing import Protocol

import trio

from twibridge.audio.wavfile import load_caller_audio

#: Item ids of thinking sounds (never an agent's: the speaker keeps them from the agent).
ITEM_PREFIX = "twibridge-thinking-"
_ids = itertools.count(1)


class FillerPlayer(Protocol):
    def start_filler(self, item_id: str, loop: bytes) -> None: ...
    async def stop_filler(self) -> None: ...


@functools.lru_cache(maxsize=4)
def load_sound(path: str) -> bytes:
    """The WAV as 8 kHz μ-law, read once per process (``validate-config`` checked it).

    Raises:
        twibridge.audio.wavfile.AudioFileError: it became unreadable since.
    """
    ulaw = load_caller_audio(path).ulaw
    return ulaw[: len(ulaw) - len(ulaw) % 160] or ulaw


class Thinking:
    """Counts running tools; plays ``sound`` through ``player`` after ``after_s`` of work."""

    def __init__(self, sound: bytes, after_s: float, player: FillerPlayer) -> None:
        self.sound = sound
        self.after_s = after_s
        self.player = player
        self.running = 0
        self.busy_since = 0.0
        self.plays = 0
        self._changed = trio.Event()

    def begin(self) -> None:
        self.running += 1
        if self.running == 1:
            self.busy_since = trio.current_time()
            self._poke()

    def end(self) -> None:
        self.running -= 1
        if self.running == 0:
            self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self) -> None:
        """The call's thinking task: idle → busy → (after ``after_s``) sound → idle."""
        while True:
            while self.running == 0:
                await self._changed.wait()
            with trio.move_on_at(self.busy_since + self.after_s):
                while self.running:
                    await self._changed.wait()
            if not self.running:
                continue
            self.plays += 1
            self.player.start_filler(f"{ITEM_PREFIX}{next(_ids)}", self.sound)
            try:
                while self.running:
                    await self._changed.wait()
            finally:
                with trio.move_on_after(1.0, shield=True):
                    await self.player.stop_filler()
