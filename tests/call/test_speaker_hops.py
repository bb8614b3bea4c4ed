"""The speaker writes a reply's audio in the pass after it arrives (issue #16, "Hops on the reply path").

Under load each pass of Trio's run loop lasts as long as every call's ready
work, so a pass the speaker spends only to sleep until a time already past
(or to take a free lock) is milliseconds added to the caller's wait.  Here
the agent's pieces arrive as a real-time agent sends them and as a burst;
the Twilio socket records the pass of each write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from passes import Passes, run_loop_passes
from support import make_config
from twibridge.agents.base import AudioOut, ReplyDone
from twibridge.call.speaker import Speaker

SID = "MZ" + "2" * 32


class Socket:
    """Twilio's end: notes the pass of each write, then yields as a real socket does after one."""

    def __init__(self, passes: Passes) -> None:
        self.passes = passes
        self.media: list[int] = []
        self.written = trio.Event()

    async def send(self, message: str) -> None:
        if '"media"' in message[:40]:
            self.media.append(self.passes.n)
            self.written.set()
        await trio.lowlevel.checkpoint()

    async def next_media(self) -> int:
        await self.written.wait()
        self.written = trio.Event()
        return self.media[-1]


@asynccontextmanager
async def running_speaker() -> AsyncIterator[tuple[Passes, Socket, Speaker]]:
    """A speaker task on :class:`Socket`, passes counted; cancelled on the way out."""
    with run_loop_passes() as passes:
        socket = Socket(passes)
        speaker = Speaker(make_config(turns={"chunk_ms": 100}).turns, socket.send, trio.Lock())
        speaker.stream_sid = SID
        async with trio.open_nursery() as nursery:
            nursery.start_soon(speaker.run)
            await trio.testing.wait_all_tasks_blocked()
            yield passes, socket, speaker
            nursery.cancel_scope.cancel()


async def test_each_real_time_piece_is_written_in_the_pass_after_it_arrives(autojump_clock: Any) -> None:
    async with running_speaker() as (passes, socket, speaker):
        for reply in range(3):
            await trio.sleep(2)  # quiet between replies: Twilio's queue has played out
            t0 = trio.current_time()
            for i in range(25):  # 500 ms in 20 ms pieces at real time
                await trio.sleep_until(t0 + i * 0.02)
                arrived = passes.n
                speaker.on_audio(AudioOut(f"r{reply}", b"\x11" * 160))
                assert await socket.next_media() == arrived + 1, (reply, i)
            speaker.on_reply_done(ReplyDone(f"r{reply}"))
    assert len(socket.media) == 75


async def test_a_burst_starts_in_the_next_pass_and_the_rest_is_still_paced(autojump_clock: Any) -> None:
    async with running_speaker() as (passes, socket, speaker):
        arrived, t0 = passes.n, trio.current_time()
        speaker.on_audio(AudioOut("r1", b"\x11" * 8 * 3000))  # one 3 s delta
        speaker.on_reply_done(ReplyDone("r1"))
        assert await socket.next_media() == arrived + 1
        while len(socket.media) < 30:
            await socket.next_media()
        # 30 chunks of 100 ms: sent as Twilio plays them, not all at once
        assert trio.current_time() - t0 >= 3.0 - speaker.playout.lead_s - 0.1
