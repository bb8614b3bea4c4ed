"""The speaker's chunking and pacing against a real bridge with agents of different speeds."""

from __future__ import annotations

import statistics
from typing import Any

import trio

from support import Leg, bridge, make_config, media_socket, silence
from twibridge.agents.base import AgentEvent, AudioOut, CallInfo, ReplyDone
from twibridge.server.app import make_runtime
from twibridge.twilio import protocol as tw


class StreamingAgent:
    """Speaks one 1 s reply in 20 ms pieces at real-time speed, like a streaming TTS."""

    name = "streaming-test"

    def __init__(self, piece_ms: int = 20, reply_ms: int = 1000) -> None:
        self.piece_ms, self.reply_ms = piece_ms, reply_ms

    async def connect(self, call: CallInfo, nursery: trio.Nursery) -> Any:
        agent = self
        send, recv = trio.open_memory_channel[AgentEvent](256)

        async def speak() -> None:
            t0 = trio.current_time()
            for i in range(agent.reply_ms // agent.piece_ms):
                await trio.sleep_until(t0 + i * agent.piece_ms / 1000)  # the agent's own pace
                await send.send(AudioOut("r1", b"\x10" * (8 * agent.piece_ms)))
            await send.send(ReplyDone("r1"))

        nursery.start_soon(speak)

        class Session:
            async def send_audio(self, ulaw: bytes) -> None: ...
            async def send_dtmf(self, digit: str) -> None: ...
            async def interrupt(self, item_id: str | None, heard_ms: int) -> None: ...
            async def mark_played(self, item_id: str, played_ms: int) -> None: ...
            async def receive(self) -> AgentEvent:
                return await recv.receive()
            async def aclose(self) -> None: ...

        return Session()


async def test_a_real_time_stream_goes_out_in_chunks_not_frames() -> None:
    cfg = make_config()
    rt = make_runtime(cfg)
    rt.provider_factory = lambda _cfg: StreamingAgent()  # type: ignore[assignment,return-value]
    with trio.fail_after(15):
        async with bridge(cfg, rt) as (url, _):
            async with media_socket(url) as ws:
                leg = Leg(ws, 31)
                await leg.start()
                await leg.media(silence(20))
                await leg.collect(until_ms_of_audio=1000, idle_s=2)
                await leg.stop()
    sizes = [len(e.payload) for e in leg.received if isinstance(e, tw.OutMedia)]
    assert sum(sizes) == 8000  # all of it, nothing lost
    assert statistics.median(sizes) >= 8 * 60  # not one message per 20 ms frame
    assert len(sizes) <= 1000 // 60 + 3
