"""The in-process call registry (``[state] backend = "memory"``, the default)."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from twibridge.state.answers import AnswerBook
from twibridge.state.registry import CallRecord


class MemoryRegistry:
    """In-process registry (the default): nothing is shared across processes,
    and history is lost on restart (bounded to ``history`` summaries)."""

    def __init__(self, history: int = 200, answers_keep_s: float = 7 * 24 * 3600,
                 transcript_ttl_s: float = 24 * 3600) -> None:
        self._live: dict[str, CallRecord] = {}
        self._history: deque[dict[str, Any]] = deque(maxlen=history)
        self.answers = AnswerBook(answers_keep_s)
        self.transcript_ttl_s = transcript_ttl_s
        #: CallSid → (expiry, transcript): the caller's speech has its own TTL (bounded by ``history``).
        self._transcripts: dict[str, tuple[float, list[Any]]] = {}

    async def try_register(self, record: CallRecord) -> bool:
        if record.call_sid in self._live:
            return False
        self._live[record.call_sid] = record
        return True

    async def refresh(self, call_sid: str) -> None:
        return None

    async def unregister(self, call_sid: str, summary: dict[str, Any] | None = None) -> None:
        self._live.pop(call_sid, None)
        if summary is not None:
            summary = dict(summary)
            transcript = summary.pop("transcript", None)
            if transcript:
                self._transcripts.pop(call_sid, None)
                self._transcripts[call_sid] = (time.time() + self.transcript_ttl_s, list(transcript))
                while len(self._transcripts) > (self._history.maxlen or 0):
                    del self._transcripts[next(iter(self._transcripts))]
            self._history.appendleft(summary)

    async def count(self) -> int:
        return len(self._live)

    async def live(self) -> list[CallRecord]:
        return list(self._live.values())

    async def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        now, out = time.time(), []
        for summary in list(self._history)[:limit]:
            kept = self._transcripts.get(str(summary.get("call_sid", "")))
            out.append({**summary, "transcript": kept[1]} if kept and kept[0] > now else summary)
        return out

    async def claim_answer(self, call_sid: str, reserve_s: float) -> bool:
        return self.answers.claim(call_sid, reserve_s, time.time())

    async def release_answer(self, call_sid: str) -> None:
        self.answers.release(call_sid)

    async def stream_started(self, call_sid: str, token_id: str, token_ttl_s: float, once: bool) -> bool:
        return self.answers.started(call_sid, token_id, token_ttl_s, once, time.time())

    async def admitted(self) -> int:
        return len(self._live) + self.answers.reserved(time.time())

    async def aclose(self) -> None:
        return None
