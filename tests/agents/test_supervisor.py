"""twibridge.agents.supervisor: caller audio reaches the session in order, batched only when frames wait.

An in-memory session stands in for a provider (the supervisor is
provider-independent; each provider's own tests run it against its fake server).
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from support import make_config
from twibridge.agents.base import AgentDisconnected, AgentEvent, CallInfo
from twibridge.agents.supervisor import AgentSupervisor

CALL = CallInfo(call_sid="CA" + "1" * 32, stream_sid="MZ" + "1" * 32, account_sid="AC" + "0" * 32)


class GatedSession:
    """Records every send_audio; a closed gate holds the sender (a slow provider)."""

    def __init__(self, batch: int | None, fail_on_send: int | None = None) -> None:
        if batch is not None:
            self.audio_batch_frames = batch
        self.sent: list[bytes] = []
        self.gate = trio.Event()
        self.gate.set()
        self.fail_on_send = fail_on_send
        self.changed = trio.Event()
        self.broken = trio.Event()  # as a real socket: a failed send ends receive() too

    async def send_audio(self, ulaw: bytes) -> None:
        await self.gate.wait()
        if self.fail_on_send is not None and len(self.sent) == self.fail_on_send:
            self.broken.set()
            raise AgentDisconnected("dropped")
        self.sent.append(ulaw)
        self.changed.set()
        self.changed = trio.Event()

    async def send_dtmf(self, digit: str) -> None:
        return None

    async def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        return None

    async def mark_played(self, item_id: str, played_ms: int) -> None:
        return None

    async def receive(self) -> AgentEvent:
        await self.broken.wait()
        raise AgentDisconnected("dropped")

    async def aclose(self) -> None:
        return None


class Provider:
    name = "gated"

    def __init__(self, *sessions: GatedSession) -> None:
        self.sessions = list(sessions)
        self.connected = 0

    async def connect(self, call: CallInfo, nursery: trio.Nursery) -> Any:
        self.connected += 1
        return self.sessions[self.connected - 1]


def frame(n: int) -> bytes:
    return bytes([n % 256]) * 160


async def on_event(event: AgentEvent) -> None:
    return None


async def run_supervisor(provider: Provider, nursery: trio.Nursery) -> AgentSupervisor:
    sup = AgentSupervisor(provider, CALL, make_config().agent, on_event)
    await nursery.start(sup.run)
    await sup.connected.wait()
    return sup


async def test_frames_that_waited_go_out_together_up_to_the_sessions_batch() -> None:
    session = GatedSession(batch=10)
    async with trio.open_nursery() as nursery:
        sup = await run_supervisor(Provider(session), nursery)
        sup.push_audio(frame(0))
        await trio.testing.wait_all_tasks_blocked()
        assert session.sent == [frame(0)]  # nothing waited: one frame, no delay
        session.gate = trio.Event()  # the provider is slow: the next send blocks...
        sup.push_audio(frame(1))
        await trio.testing.wait_all_tasks_blocked()
        for n in range(2, 27):  # ...while 25 more frames arrive
            sup.push_audio(frame(n))
        session.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert [len(s) // 160 for s in session.sent] == [1, 1, 10, 10, 5]
    assert b"".join(session.sent) == b"".join(frame(n) for n in range(27))


async def test_sessions_without_a_batch_get_one_frame_per_send() -> None:
    session = GatedSession(batch=None)
    async with trio.open_nursery() as nursery:
        sup = await run_supervisor(Provider(session), nursery)
        session.gate = trio.Event()
        for n in range(12):
            sup.push_audio(frame(n))
        await trio.testing.wait_all_tasks_blocked()
        session.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert session.sent == [frame(n) for n in range(12)]


async def test_a_batch_that_failed_is_sent_first_and_in_order_after_reconnecting(autojump_clock: Any) -> None:
    first, second = GatedSession(batch=4, fail_on_send=0), GatedSession(batch=4)
    first.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        sup = await run_supervisor(Provider(first, second), nursery)
        for n in range(6):
            sup.push_audio(frame(n))
        await trio.testing.wait_all_tasks_blocked()
        first.gate.set()  # the batch of 4 fails: the provider dropped; reconnect after a (virtual) backoff
        with trio.fail_after(30):
            while sum(len(s) for s in second.sent) < 6 * 160:
                await second.changed.wait()
        nursery.cancel_scope.cancel()
    assert first.sent == [] and b"".join(second.sent) == b"".join(frame(n) for n in range(6))
