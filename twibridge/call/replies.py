"""Reply audio waiting to be played: one bounded buffer per agent turn.

Providers produce audio faster than real time (OpenAI streams a whole reply
in a fraction of its duration), while Twilio must be fed at real time.  The
agent's reader therefore never waits on pacing: it appends to the reply's
buffer (bounded by ``MAX_REPLY_MS``; beyond it audio is dropped and counted)
and the call's paced writer drains it.
"""

from __future__ import annotations

import trio

#: The longest reply we hold un-played (2 minutes of μ-law = 960 KB).
MAX_REPLY_MS = 120_000
BYTES_PER_MS = 8


class ReplyBuffer:
    """Audio of one agent reply (``item_id``), filled by the agent, drained by the writer."""

    def __init__(self, item_id: str, max_ms: int = MAX_REPLY_MS) -> None:
        self.item_id = item_id
        self._data = bytearray()
        self._pos = 0
        self._cap = max_ms * BYTES_PER_MS
        self.finished = False
        self.dropped_bytes = 0
        self._changed = trio.Event()

    @property
    def available(self) -> int:
        return len(self._data) - self._pos

    def append(self, ulaw: bytes) -> None:
        room = self._cap - self.available
        if len(ulaw) > room:
            self.dropped_bytes += len(ulaw) - max(room, 0)
            ulaw = ulaw[: max(room, 0)]
        self._data += ulaw
        self._changed.set()

    def finish(self) -> None:
        self.finished = True
        self._changed.set()

    def take(self, n: int) -> bytes:
        chunk = bytes(self._data[self._pos : self._pos + n])
        self._pos += len(chunk)
        if self._pos > 64 * 1024:  # compact now and then, not per chunk
            del self._data[: self._pos]
            self._pos = 0
        return chunk

    async def wait_changed(self) -> None:
        """Wait until audio is appended or the reply finishes."""
        if self._changed.is_set():
            self._changed = trio.Event()
        await self._changed.wait()


class LoopedReply(ReplyBuffer):
    """A bridge-made stream played like a reply (the thinking sound): ``loop``
    repeated until the speaker stops it.  Never finishes, never runs dry."""

    def __init__(self, item_id: str, loop: bytes) -> None:
        super().__init__(item_id)
        self._loop = loop or b"\xff" * 160
        self._at = 0
        self.first_audio_at = trio.current_time()

    @property
    def available(self) -> int:
        return 1 << 30

    def append(self, ulaw: bytes) -> None:
        return None

    def take(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            piece = self._loop[self._at : self._at + n - len(out)]
            out += piece
            self._at = (self._at + len(piece)) % len(self._loop)
        return bytes(out)
