"""What the provider tests share: a connected session, feeding it audio, catching a refused connect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from fakes import SessionEvents, frames
from twibridge.agents.base import AgentDisconnected, AgentFailed, AgentProvider, AgentSession, CallInfo


async def speak(session: AgentSession, audio: bytes) -> None:
    """Send ``audio`` to the session in 20 ms frames, as the bridge does (no pacing: audio time only)."""
    for frame in frames(audio):
        await session.send_audio(frame)


async def connect_error(provider: AgentProvider, call: CallInfo) -> Exception:
    """What ``provider.connect`` raised (it must raise), outside any nursery's exception group."""
    async with trio.open_nursery() as nursery:
        try:
            await provider.connect(call, nursery)
        except (AgentDisconnected, AgentFailed) as exc:
            return exc
    raise AssertionError("connect succeeded")


@asynccontextmanager
async def connected(provider: AgentProvider, call: CallInfo) -> AsyncIterator[tuple[Any, SessionEvents]]:
    """A connected session plus its drained events; closed (and its tasks gone) on exit."""
    async with trio.open_nursery() as nursery:  # stands in for the supervisor's per-connection nursery
        session = await provider.connect(call, nursery)
        events = SessionEvents(session)
        nursery.start_soon(events.run)
        try:
            yield session, events
        finally:
            with trio.move_on_after(2, shield=True):
                await session.aclose()
            nursery.cancel_scope.cancel()
