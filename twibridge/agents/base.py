"""The one small interface every agent provider implements.

A provider is a module with a class satisfying :class:`AgentProvider`; its
:meth:`~AgentProvider.connect` returns an :class:`AgentSession` for one call.
The bridge (``call.py`` via ``agents/supervisor.py``) never knows which
provider it talks to: it sends caller audio (μ-law 8 kHz, 20 ms frames,
gap-filled, in order) and reads :data:`AgentEvent`\\ s.

Why ``connect(call, nursery)`` rather than an async context manager: the
supervisor bounds the *handshake* with ``fail_after`` while the session's
background tasks (e.g. a WebSocket reader) live in a nursery the supervisor
owns and cancels on disconnect — a cancel scope may not close around a
nursery opened inside it.

Errors: :class:`AgentDisconnected` when the provider's connection ends or
breaks (the supervisor may reconnect); :class:`AgentFailed` when retrying
cannot help (bad credentials, provider refuses the session).  Provider
messages that break its protocol are :class:`AgentProtocolError` (a subclass
of ``AgentDisconnected``: the connection is no longer trustworthy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

import trio


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the agent may call on this call (``[[tools.functions]]``):
    what a provider declares to its model.  Running it is the bridge's job
    (the tools executor), never the provider module's."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What an agent may know about the call (no secrets in here)."""

    call_sid: str
    stream_sid: str
    account_sid: str = ""
    from_number: str = ""
    to_number: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    #: The configured functions this call's agent may call (besides the built-ins).
    tools: tuple[ToolSpec, ...] = ()
    #: The agent routing chose (``default`` = ``[agent]``; else an ``[agents.NAME]``).
    agent: str = "default"
    #: Variables the pre-call lookup gave (``[routing.variables]`` defaults included).
    variables: Mapping[str, str] = field(default_factory=dict)


# -- events from the agent to the bridge ------------------------------------


@dataclass(frozen=True, slots=True)
class AudioOut:
    """Reply audio (μ-law 8 kHz) for the reply ``item_id``."""

    item_id: str
    ulaw: bytes


@dataclass(frozen=True, slots=True)
class ReplyDone:
    """The agent has produced all audio of ``item_id``."""

    item_id: str


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The provider detected caller speech: its barge-in signal."""

    audio_start_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Transcript:
    role: str  # "user" | "assistant"
    text: str


@dataclass(frozen=True, slots=True)
class HangupRequest:
    reason: str = "agent"


@dataclass(frozen=True, slots=True)
class TransferRequest:
    to: str | None = None  # None: use [fallback] dial


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks the bridge to run one of the configured functions.

    ``arguments`` is the JSON text as the model wrote it (it may be invalid:
    the tools executor answers that as an error the model can hear).  The
    result goes back through :meth:`AgentSession.send_tool_result` with the
    same ``call_id``.
    """

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class AgentNotice:
    """A provider error or warning that does not end the session (logged)."""

    message: str
    code: str = ""


AgentEvent = (AudioOut | ReplyDone | SpeechStarted | Transcript | HangupRequest | TransferRequest | ToolCall
              | AgentNotice)


class AgentDisconnected(Exception):
    """The provider connection ended or broke; a reconnect may help."""


class AgentProtocolError(AgentDisconnected):
    """The provider sent something that breaks its documented protocol."""


class AgentFailed(Exception):
    """The provider cannot serve this call; retrying will not help."""


class AgentSession(Protocol):
    """One live provider connection for one call.

    A session may set ``audio_batch_frames`` (an int, default 1): then, when
    the supervisor finds several caller frames waiting (it fell behind, e.g.
    under load), it joins up to that many into one :meth:`send_audio` call.
    Nothing waits to fill a batch, so no latency is added; a provider whose
    messages take any length of audio (OpenAI's appends) saves messages, and
    CPU, exactly when the process is busiest.
    """

    async def send_audio(self, ulaw: bytes) -> None:
        """Caller audio: μ-law 8 kHz, in order, gaps filled; 20 ms, or whole
        20 ms frames up to ``audio_batch_frames`` of them."""

    async def send_dtmf(self, digit: str) -> None:
        """A key the caller pressed (ignored by providers without DTMF)."""

    async def interrupt(self, item_id: str | None, heard_ms: int) -> None:
        """The bridge cut the reply ``item_id`` off after ``heard_ms`` were heard.

        Providers that keep conversation state cancel the response and
        truncate it at ``heard_ms`` (skipping the truncate when it is 0).
        """

    async def mark_played(self, item_id: str, played_ms: int) -> None:
        """Twilio confirmed ``played_ms`` of ``item_id`` played (optional)."""

    async def send_tool_result(self, call_id: str, name: str, output: Mapping[str, Any]) -> None:
        """The result of the :class:`ToolCall` ``call_id`` (a JSON object; ``{"error": ...}``
        when it failed), for the model to speak from.  Providers without tools ignore it."""

    async def receive(self) -> AgentEvent:
        """The next event; raises :class:`AgentDisconnected` when the connection ends."""
        ...

    async def aclose(self) -> None:
        """Say goodbye to the provider (bounded) and release the connection."""


class AgentProvider(Protocol):
    name: str

    async def connect(self, call: CallInfo, nursery: trio.Nursery) -> AgentSession:
        """Open a session; background tasks go into ``nursery``.

        Raises:
            AgentDisconnected: could not connect (a retry may work).
            AgentFailed: the provider refused (a retry will not work).
        """
        ...
