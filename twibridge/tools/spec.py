"""What a tool call is, for every wing: the function declared, the call made, the call's identity.

Defined here, below the agents (``agents`` may import ``tools``, never the
other way); :mod:`twibridge.agents.base` re-exports :class:`ToolSpec` and
:class:`ToolCall` under their usual names, so providers keep importing them
from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the agent may call on this call (``[[tools.functions]]``):
    what a provider declares to its model.  Running it is the bridge's job
    (the tools executor), never the provider module's."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks the bridge to run one of the configured functions.

    ``arguments`` is the JSON text as the model wrote it (it may be invalid:
    the tools executor answers that as an error the model can hear).  The
    result goes back through ``AgentSession.send_tool_result`` with the
    same ``call_id``.
    """

    call_id: str
    name: str
    arguments: str


class CallIdentity(Protocol):
    """Who the call is, as the backend's request says it (``agents.base.CallInfo`` is one)."""

    @property
    def call_sid(self) -> str: ...
    @property
    def stream_sid(self) -> str: ...
    @property
    def from_number(self) -> str: ...
    @property
    def to_number(self) -> str: ...
    @property
    def params(self) -> Mapping[str, str]: ...
    @property
    def tools(self) -> tuple[ToolSpec, ...]:
        """What this call's agent may call (a route may allow a subset of the configured functions)."""
        ...
