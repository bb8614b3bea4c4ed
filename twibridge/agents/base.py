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

# -- what an agent can make us keep or log (issue #23: a hostile or buggy agent) --
#: Longest reply ``item_id`` accepted (longer: a protocol error, the connection is dropped).
MAX_ITEM_ID_CHARS = 128
#: One transcript entry is cut to this many characters.
MAX_TRANSCRIPT_CHARS = 2048
#: A notice (provider error text) is cut to this many characters.
MAX_NOTICE_CHARS = 200
#: Largest message read from an agent WebSocket (trio-websocket closes 1009 past it).
MAX_AGENT_MESSAGE_BYTES = 256 * 1024


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


#: Longest transfer summary kept from an agent (it is spoken to the human).
MAX_SUMMARY_CHARS = 600
#: The ``summary`` parameter every provider's ``transfer_to_human`` declares (issue #21).
SUMMARY_PARAMETER = {"type": "string", "description": "For the person taking the call: who the caller is and "
                     "what they need, in one or two sentences, so they need not repeat themselves."}


#: JSON-schema parameters of the built-in ``end_call`` and ``transfer_to_human`` tools, for the
#: providers that declare them as plain JSON schema (Deepgram, Gemini).
_WHY: dict[str, Any] = {"type": "string", "description": "Why, in a few words."}
REASON_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {"reason": _WHY}}
TRANSFER_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {"reason": _WHY, "summary": SUMMARY_PARAMETER}}


def summary_of(args: Mapping[str, Any]) -> str | None:
    """A transfer request's ``summary`` (a string), clipped; None when absent."""
    value = args.get("summary")
    return clip(value.strip(), MAX_SUMMARY_CHARS) if isinstance(value, str) and value.strip() else None



# Defined in the tools wing (below this one); re-exported: providers import them from here.
from twibridge.tools.spec import ToolCall as ToolCall
from twibridge.tools.spec import ToolSpec as ToolSpec


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
    #: ``[agent] greeting``: what the agent says first, without waiting for the caller.
    #: Empty on a reconnect (the caller already heard it).
    greeting: str = ""
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
    """A final transcript line.  Only ``role`` and ``text`` are required; the rest
    are for providers that know more (the call stamps the time otherwise).

    ``t_ms``: when it was said, in ms since the stream's ``start`` (None: the
    call uses the time the line arrived, or its reply's first audio).
    ``item_id``: the reply it belongs to (links the text to its audio).
    ``truncated``: the provider cut ``item_id``'s earlier text to what the
    caller heard before a barge-in (OpenAI's ``conversation.item.truncated``):
    this text replaces it.
    """

    role: str  # "user" | "assistant"
    text: str
    t_ms: int | None = None
    item_id: str = ""
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Usage:
    """What the provider reports it used (e.g. OpenAI ``response.done`` usage tokens);
    the call sums every report into the post-call report's ``usage.provider``."""

    counts: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class HangupRequest:
    reason: str = "agent"


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """The agent asks for a person: ``to`` (None: ``[transfer] to``), and a
    ``summary`` of the call so far that a warm transfer speaks to the human."""

    to: str | None = None
    summary: str | None = None


@dataclass(frozen=True, slots=True)
class AgentNotice:
    """A provider error or warning that does not end the session (logged)."""

    message: str
    code: str = ""


AgentEvent = (AudioOut | ReplyDone | SpeechStarted | Transcript | HangupRequest | TransferRequest | ToolCall
              | AgentNotice | Usage)


class AgentDisconnected(Exception):
    """The provider connection ended or broke; a reconnect may help."""


class AgentProtocolError(AgentDisconnected):
    """The provider sent something that breaks its documented protocol."""


class AgentFailed(Exception):
    """The provider cannot serve this call; retrying will not help."""


class SessionDefaults:
    """The optional parts of :class:`AgentSession` for a provider with no keypad input, no use for
    playout marks and no message that asks for a reply by instruction: nothing is sent, and
    :meth:`prompt` answers False (the bridge plays its soft tone instead)."""

    async def send_dtmf(self, digit: str) -> None:
        return None

    async def mark_played(self, item_id: str, played_ms: int) -> None:
        return None

    async def prompt(self, instruction: str) -> bool:
        return False


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

    async def prompt(self, instruction: str) -> bool:
        """Ask the agent to speak now, following ``instruction`` (an idle check-in, a goodbye).

        Returns False when this provider cannot be asked (the bridge then
        plays a short tone instead); True once the request is sent.
        """
        ...

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
