"""twibridge.agents.supervisor: caller audio reaches the session in order, batched only when frames wait;
failover to the next provider with the conversation so far.

An in-memory session stands in for a provider (the supervisor is
provider-independent; each provider's own tests run it against its fake server).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
import trio
import trio.testing

from support import make_config
from twibridge.agents.base import AgentDisconnected, AgentEvent, AgentFailed, CallInfo, Transcript
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


# -- failover (issue #20) -----------------------------------------------------------


class ScriptedSession(GatedSession):
    """Gives ``events`` from receive(), then ends the way ``then`` says."""

    def __init__(self, events: list[AgentEvent], then: BaseException | None = None) -> None:
        super().__init__(batch=None)
        self.events, self.then = list(events), then
        self.done = trio.Event()

    async def receive(self) -> AgentEvent:
        if self.events:
            return self.events.pop(0)
        self.done.set()
        if self.then is not None:
            raise self.then
        await trio.sleep_forever()
        raise AssertionError


class Named:
    """A provider named ``name`` that hands out ``sessions`` (an exception in the list: connect raises it)."""

    def __init__(self, name: str, *sessions: Any) -> None:
        self.name = name
        self.sessions = list(sessions)
        self.history: deque[Transcript] = deque()
        self.connects = 0
        self.seen_history: list[list[Transcript]] = []

    async def connect(self, call: CallInfo, nursery: trio.Nursery) -> Any:
        self.connects += 1
        self.seen_history.append(list(self.history))
        nxt = self.sessions.pop(0)
        if isinstance(nxt, BaseException):
            raise nxt
        return nxt


def supervisor(primary: Named, *failover: Named, attempts: int = 0) -> tuple[AgentSupervisor, list[AgentEvent]]:
    seen: list[AgentEvent] = []

    async def collect(event: AgentEvent) -> None:
        seen.append(event)

    cfg = make_config(agent={"reconnect_attempts": attempts, "reconnect_backoff_s": 0.01,
                             "reconnect_backoff_max_s": 0.02}).agent
    return AgentSupervisor(primary, CALL, cfg, collect, failover=list(failover)), seen  # type: ignore[arg-type]


async def test_a_refusing_provider_fails_over_at_once_and_buffered_audio_follows() -> None:
    second = ScriptedSession([])
    primary, backup = Named("openai", AgentFailed("bad key")), Named("echo", second)
    sup, _ = supervisor(primary, backup, attempts=3)
    sup.push_audio(frame(1))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with trio.fail_after(5):
            while not second.sent:
                await second.changed.wait()
        nursery.cancel_scope.cancel()
    assert primary.connects == 1  # refused: no retry on the same provider
    assert second.sent == [frame(1)]
    assert sup.served == ["echo"] and sup.failovers == [("openai", "echo")]


async def test_a_fatal_failure_mid_call_carries_the_conversation_to_the_next(autojump_clock: Any) -> None:
    said = [Transcript("user", "my order is late"), Transcript("assistant", "let me check")]
    first = ScriptedSession(list(said), then=AgentDisconnected("gone"))
    nxt = ScriptedSession([])
    primary = Named("deepgram", first, AgentDisconnected("still gone"))
    backup = Named("gemini", nxt)
    sup, seen = supervisor(primary, backup, attempts=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with trio.fail_after(30):
            await nxt.done.wait()
        nursery.cancel_scope.cancel()
    assert seen == said
    assert backup.seen_history == [said]  # gemini replays it as client turns
    assert sup.served == ["deepgram", "gemini"] and sup.failovers == [("deepgram", "gemini")]


async def test_when_the_list_is_exhausted_the_call_fails() -> None:
    sup, _ = supervisor(Named("openai", AgentFailed("no")), Named("echo", AgentFailed("also no")))
    with pytest.raises(AgentFailed, match="also no"):
        await sup.run()
    assert sup.failovers == [("openai", "echo")] and sup.served == []


async def test_a_planned_disconnect_resumes_at_once_without_counting(autojump_clock: Any) -> None:
    planned = AgentDisconnected("goAway")
    planned.planned = True  # type: ignore[attr-defined]
    sessions = [ScriptedSession([], then=planned) for _ in range(3)]
    last = ScriptedSession([])
    provider = Named("gemini", *sessions, last)
    sup, _ = supervisor(provider, attempts=0)  # no reconnect budget at all
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with trio.fail_after(5):
            await last.done.wait()
        nursery.cancel_scope.cancel()
    assert provider.connects == 4 and sup.failovers == [] and sup.served == ["gemini"]
