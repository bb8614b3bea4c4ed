"""The bridge's own tools: what an agent can ask of the call itself, not of the business.

``send_dtmf`` (issue #21: tones on the line, for another company's phone menu)
and, when the call is recorded, ``pause_recording`` / ``resume_recording``
(issue #19: while a card number is read out).  They run through the same tools
executor as ``[[tools.functions]]`` (:mod:`twibridge.tools.executor`): offered
to the model with the configured ones, arguments checked against their schema,
bounded by ``[tools] timeout_s``, logged as ``tool.done``, measured, and listed
in the report.  They need no ``[tools] secret``: nothing leaves the process.

``end_call`` and ``transfer_to_human`` are not here: each provider maps them to
its own hang-up and transfer messages (they change the call's state, not a tool
result).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping

from twibridge.call.edges import SEND_DTMF
from twibridge.tools.executor import Builtin, ToolError
from twibridge.tools.spec import CallIdentity, ToolSpec

_NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}
#: ``Call.pause_recording`` / ``Call.resume_recording`` (call/records_hooks.py).
Recorder = Callable[[], Awaitable[dict[str, Any]]]

PAUSE_RECORDING = ToolSpec(
    name="pause_recording",
    description="Pause the call recording (both sides become silence), e.g. before the caller reads out a "
    "card number. Resume it with resume_recording.",
    parameters=_NO_ARGUMENTS,
)
RESUME_RECORDING = ToolSpec(
    name="resume_recording",
    description="Resume the call recording after pause_recording.",
    parameters=_NO_ARGUMENTS,
)


def _answer(result: Mapping[str, Any]) -> Mapping[str, Any]:
    """A result naming an error becomes the executor's error outcome (``failed``), not ``ok``."""
    if "error" in result:
        raise ToolError(str(result["error"]))
    return result


def call_builtins(send_dtmf: Callable[[object], Mapping[str, Any]],
                  recording: tuple[Recorder, Recorder] | None) -> dict[str, Builtin]:
    """One call's built-ins: ``send_dtmf`` always; ``recording`` (pause, resume) only when the call
    is recorded, so an agent is never offered a tool that can only fail.  Their names are
    reserved for configured functions (``config/tools.py`` RESERVED_NAMES)."""

    async def dtmf(_: CallIdentity, args: Mapping[str, Any]) -> Mapping[str, Any]:
        return _answer(send_dtmf(args.get("digits")))

    def recorder(method: Recorder) -> Callable[[CallIdentity, Mapping[str, Any]], Awaitable[Mapping[str, Any]]]:
        async def run(_: CallIdentity, __: Mapping[str, Any]) -> Mapping[str, Any]:
            return _answer(await method())
        return run

    out = {SEND_DTMF.name: Builtin(SEND_DTMF, dtmf)}
    if recording is not None:
        pause, resume = recording
        out[PAUSE_RECORDING.name] = Builtin(PAUSE_RECORDING, recorder(pause))
        out[RESUME_RECORDING.name] = Builtin(RESUME_RECORDING, recorder(resume))
    return out
