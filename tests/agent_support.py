"""What the provider tests share: feeding a session audio, and catching a refused connect."""

from __future__ import annotations

import trio

from fakes import frames
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
