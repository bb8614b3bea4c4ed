"""Idle check-ins: when neither side has spoken for ``[calls] idle_prompt_s``.

Quiet is counted from the later of the caller's last speech and the moment
Twilio had *played* the agent's last audio (its last mark came back), never
from when that audio was sent: a 6-second answer must not be followed by
"are you still there?" 2 seconds after it ends.  After ``idle_prompts``
check-ins nobody answered, the agent says goodbye and the call ends
(outcome ``caller-idle``).  Agents that cannot be asked to speak get a soft
tone instead of the check-in.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import trio

CHECK_IN = ("The caller has said nothing for {s:g} seconds. Ask them, briefly and kindly, whether they are "
            "still there and if you can help with anything else.")
GOODBYE = ("The caller has not answered for a while. Say a short, polite goodbye now; the call will end "
           "after it.")


class IdleWatch:
    """One call's quiet clock (timestamps are ``trio.current_time()``)."""

    def __init__(self, prompt_s: float, prompts: int) -> None:
        self.prompt_s = prompt_s
        self.prompts = prompts
        self.last_activity = trio.current_time()
        self.check_ins = 0

    @property
    def enabled(self) -> bool:
        return self.prompt_s > 0

    def touch(self, at: float) -> None:
        """Someone was heard at ``at`` (caller speech, or the agent's audio played until then)."""
        if at > self.last_activity:
            self.last_activity = at

    async def run(self, heard_until: Callable[[float], float], check_in: Callable[[str], Awaitable[None]],
                  goodbye: Callable[[str], Awaitable[None]]) -> None:
        """Until the call ends: a check-in per quiet period, then the goodbye (returns after it).

        ``heard_until(now)``: until when someone is audible as far as the call
        knows now (``now`` while the caller talks, the end of what the agent
        has sent while it plays); the call also calls :meth:`touch` at each end
        of caller speech and at each reply's last mark, so no polling is
        needed: one wake per quiet period at most.
        """
        if not self.enabled:
            await trio.sleep_forever()
        while True:
            await trio.sleep_until(self.last_activity + self.prompt_s)
            now = trio.current_time()
            self.touch(heard_until(now))
            if now < self.last_activity + self.prompt_s:
                continue  # someone spoke (or is still speaking) since we went to sleep
            if self.check_ins >= self.prompts:
                await goodbye(GOODBYE)
                return
            self.check_ins += 1
            await check_in(CHECK_IN.format(s=self.prompt_s))
            self.touch(trio.current_time())
