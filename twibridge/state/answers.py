"""Which ``/voice`` webhooks were answered, which streams started: the local book.

``/voice`` answers a CallSid **once** (:mod:`twibridge.state.registry` has the
rule and why Twilio's own retries still work).  This module is the in-process
form of that record: the memory backend's whole state, and the Redis
backend's fallback while Redis is unreachable.  Everything is bounded: answers
are kept for ``keep_s`` (``[state] history_ttl_s``) and at most
:data:`MAX_ANSWERS_KEPT` of them (the oldest forgotten first); reservations
and used tokens expire with the token TTL.

Sans-IO: every method takes the clock reading.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from twibridge.state.registry import ANSWER_RETRY_WINDOW_S, MAX_ANSWERS

#: Answered CallSids remembered at most (≈ 100 bytes each).
MAX_ANSWERS_KEPT = 50_000


@dataclass
class _Answer:
    first: float
    answers: int = 1
    streamed: bool = False


class AnswerBook:
    """Answered CallSids, live reservations and used stream tokens of one process."""

    def __init__(self, keep_s: float, max_kept: int = MAX_ANSWERS_KEPT) -> None:
        self.keep_s = keep_s
        self.max_kept = max_kept
        self._answers: OrderedDict[str, _Answer] = OrderedDict()  # by first answer, oldest first
        self._reserved: dict[str, float] = {}  # CallSid -> reservation end
        self._tokens: OrderedDict[str, float] = OrderedDict()  # token id -> expiry, in use order

    def claim(self, call_sid: str, reserve_s: float, now: float) -> bool:
        """May ``/voice`` answer ``call_sid`` (now)?  If so, reserve a call slot for ``reserve_s``."""
        self._prune(now)
        ans = self._answers.get(call_sid)
        if ans is None:
            self._answers[call_sid] = _Answer(now)
        elif ans.streamed or now - ans.first > ANSWER_RETRY_WINDOW_S or ans.answers >= MAX_ANSWERS:
            return False
        else:
            ans.answers += 1
        if len(self._reserved) < self.max_kept:
            self._reserved[call_sid] = now + reserve_s
        return True

    def release(self, call_sid: str) -> None:
        """``call_sid`` was answered busy after all: forget its answer and reservation."""
        self._reserved.pop(call_sid, None)
        self._answers.pop(call_sid, None)

    def started(self, call_sid: str, token_id: str, token_ttl_s: float, once: bool, now: float) -> bool:
        """Record that ``call_sid``'s stream started (with ``token_id``, '' without a token).

        False: that token was used before, or (``once``) this CallSid already
        streamed.  Either way the CallSid's reservation ends here.
        """
        self._prune(now)
        self._reserved.pop(call_sid, None)
        if token_id:
            if token_id in self._tokens:
                return False
            self._tokens[token_id] = now + token_ttl_s + 1
            while len(self._tokens) > self.max_kept:
                self._tokens.popitem(last=False)
        ans = self._answers.get(call_sid)
        if ans is not None:
            if ans.streamed and once:
                return False
            ans.streamed = True
        return True

    def reserved(self, now: float) -> int:
        """Answered calls whose stream has not started yet (and whose token is still good)."""
        for sid in [s for s, until in self._reserved.items() if until <= now]:
            del self._reserved[sid]
        return len(self._reserved)

    def _prune(self, now: float) -> None:
        while self._answers:
            sid, ans = next(iter(self._answers.items()))
            if now - ans.first <= self.keep_s and len(self._answers) <= self.max_kept:
                break
            del self._answers[sid]
        while self._tokens:
            tid, expiry = next(iter(self._tokens.items()))
            if expiry > now:
                break
            del self._tokens[tid]
