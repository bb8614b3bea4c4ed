"""twibridge.agents.vapi_protocol: bodies, replies and control messages, no sockets."""

from __future__ import annotations

from dataclasses import replace

import json

import pytest

from twibridge.agents import vapi_protocol as vp
from twibridge.agents.base import (
    AgentDisconnected, AgentFailed, AgentNotice, AgentProtocolError, AudioOut, CallInfo, HangupRequest, ReplyDone,
    SpeechStarted, Transcript, TransferRequest,
)

CALL = CallInfo(call_sid="CA" + "1" * 32, stream_sid="MZ" + "1" * 32, from_number="+15551230000",
                to_number="+15559870000")
WS_URL = "wss://api.vapi.ai/7420f27a-30fd-4f49-a995-5549ae7cc00d/transport"
SPEECH = bytes(range(0, 160))
QUIET = b"\xff" * 160


def msg(**fields: object) -> str:
    return json.dumps(fields)


# -- POST /call ----------------------------------------------------------------------


def test_body_with_assistant_id_is_the_documented_shape() -> None:
    body = vp.build_create_call("asst-1", None, CALL)
    assert body["assistantId"] == "asst-1"
    assert "assistant" not in body and "phoneNumber" not in body and "phoneNumberId" not in body
    assert body["transport"] == {"provider": "vapi.websocket",
                                 "audioFormat": {"format": "mulaw", "container": "raw", "sampleRate": 8000}}
    overrides = body["assistantOverrides"]
    assert {"user-interrupted", "hang", "speech-update", "tool-calls", "status-update"} <= set(overrides["clientMessages"])
    assert overrides["variableValues"] == {"twilioCallSid": CALL.call_sid, "callerNumber": "+15551230000",
                                           "calledNumber": "+15559870000"}
    assert "firstMessageMode" not in overrides
    json.dumps(body)  # serialisable as is
    routed = vp.build_create_call("asst-1", None, replace(CALL, variables={"customer_name": "Ada"}))
    assert routed["assistantOverrides"]["variableValues"]["customer_name"] == "Ada"


def test_inline_assistant_wins_and_reconnect_waits_for_the_caller() -> None:
    inline = {"model": {"provider": "openai", "model": "gpt-4o"}, "firstMessage": "Hi"}
    body = vp.build_create_call("asst-1", inline, CALL, reconnect=True)
    assert body["assistant"] == inline and "assistantId" not in body
    assert body["assistantOverrides"]["firstMessageMode"] == "assistant-waits-for-user"
    body["transport"]["audioFormat"]["format"] = "changed"
    assert vp.TRANSPORT["audioFormat"]["format"] == "mulaw"  # the body is a copy


def test_body_needs_an_assistant() -> None:
    with pytest.raises(ValueError):
        vp.build_create_call("", None, CALL)


def test_created_call_reply_parses_and_hides_the_url() -> None:
    reply = {"id": "7420f27a-30fd-4f49-a995-5549ae7cc00d", "type": "vapi.websocketCall", "status": "queued",
             "transport": {"provider": "vapi.websocket", "websocketCallUrl": WS_URL}}
    call = vp.parse_create_call(201, json.dumps(reply).encode())
    assert call.websocket_url == WS_URL and call.id == reply["id"]
    assert WS_URL not in repr(call) and reply["id"] not in repr(call)


@pytest.mark.parametrize("reply", [b"not json", b"[]", b'{"id": "x"}',
                                   b'{"id": "x", "transport": {"websocketCallUrl": "https://x/y"}}',
                                   b'{"transport": {"websocketCallUrl": "wss://x/y"}}'])
def test_unusable_success_reply_is_a_protocol_error(reply: bytes) -> None:
    with pytest.raises(AgentProtocolError):
        vp.parse_create_call(201, reply)


@pytest.mark.parametrize("status", [401, 403])
def test_bad_key_fails_for_good_with_a_hint(status: int) -> None:
    with pytest.raises(AgentFailed, match="agent.vapi.api_key.*Invalid Key"):
        vp.parse_create_call(status, b'{"message": "Invalid Key.", "error": "Unauthorized", "statusCode": 401}')


def test_bad_request_fails_with_vapi_message_list() -> None:
    body = b'{"message": ["assistantId must be a UUID", "x"], "error": "Bad Request", "statusCode": 400}'
    with pytest.raises(AgentFailed, match=r"HTTP 400\): assistantId must be a UUID; x"):
        vp.parse_create_call(400, body)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_transient_http_errors_disconnect(status: int) -> None:
    with pytest.raises(AgentDisconnected) as info:
        vp.parse_create_call(status, b"<html>oops</html>")
    assert not isinstance(info.value, AgentProtocolError)


def test_error_text_is_bounded() -> None:
    assert len(vp.error_text(json.dumps({"message": "x" * 5000}).encode())) <= vp.MAX_ERROR_CHARS + 1


# -- messages we send -----------------------------------------------------------------------


def test_outgoing_control_messages() -> None:
    assert json.loads(vp.end_call_message()) == {"type": "end-call"}
    assert json.loads(vp.say_message("bye", True)) == {"type": "say", "content": "bye", "endCallAfterSpoken": True}
    assert json.loads(vp.add_message("system", "ctx")) == {
        "type": "add-message", "message": {"role": "system", "content": "ctx"}, "triggerResponseEnabled": False}


# -- items, barge-in ---------------------------------------------------------------------------


def test_audio_items_follow_assistant_turns() -> None:
    s = vp.VapiStream()
    assert s.text(msg(type="speech-update", status="started", role="assistant", turn=0)) == []
    assert s.audio(SPEECH) == [AudioOut("vapi-1", SPEECH)]
    assert s.audio(QUIET) == [AudioOut("vapi-1", QUIET)]  # silence inside a turn is part of it
    assert s.text(msg(type="speech-update", status="stopped", role="assistant", turn=0)) == [ReplyDone("vapi-1")]
    assert s.audio(SPEECH) == [AudioOut("vapi-2", SPEECH)]


def test_audio_before_speech_started_stays_in_one_item() -> None:
    s = vp.VapiStream()
    assert s.audio(SPEECH) == [AudioOut("vapi-1", SPEECH)]
    s.text(msg(type="speech-update", status="started", role="assistant"))
    assert s.audio(SPEECH) == [AudioOut("vapi-1", SPEECH)]


def test_silence_between_turns_is_not_a_reply() -> None:
    s = vp.VapiStream()
    assert s.audio(QUIET) == [] and s.audio(b"\x7f" * 160) == [] and s.audio(b"") == []
    assert s.silence_dropped == 2


def test_user_interrupted_is_barge_in_and_starts_a_new_item() -> None:
    s = vp.VapiStream()
    s.audio(SPEECH)
    assert s.text(msg(type="user-interrupted", turnId="t1")) == [SpeechStarted()]
    assert s.audio(SPEECH) == [AudioOut("vapi-2", SPEECH)]
    assert s.interruptions == 1


def test_local_barge_in_starts_a_new_item_too() -> None:
    s = vp.VapiStream()
    s.audio(SPEECH)
    s.interrupted_locally()
    assert s.audio(SPEECH) == [AudioOut("vapi-2", SPEECH)]


def test_user_speech_updates_are_ignored() -> None:
    s = vp.VapiStream()
    s.audio(SPEECH)
    assert s.text(msg(type="speech-update", status="stopped", role="user")) == []
    assert s.audio(SPEECH) == [AudioOut("vapi-1", SPEECH)]


# -- wrapping, transcripts, ignored types --------------------------------------------------------


def test_wrapped_and_flat_messages_parse_alike() -> None:
    flat, wrapped = vp.VapiStream(), vp.VapiStream()
    m = {"type": "transcript", "role": "user", "transcriptType": "final", "transcript": " where is my order "}
    assert flat.text(json.dumps(m)) == wrapped.text(json.dumps({"message": m})) == [Transcript("user", "where is my order")]


def test_partial_and_empty_transcripts_are_ignored() -> None:
    s = vp.VapiStream()
    assert s.text(msg(type="transcript", role="user", transcriptType="partial", transcript="wher")) == []
    assert s.text(msg(type="transcript", role="user", transcriptType="final", transcript="  ")) == []
    assert s.text(msg(type="transcript", role="robot", transcriptType="final", transcript="x")) == []


def test_other_types_are_ignored_and_counted() -> None:
    s = vp.VapiStream()
    for kind in ("model-output", "conversation-update", "voice-input", "model-output"):
        assert s.text(msg(type=kind, output="x")) == []
    assert s.ignored == {"model-output": 2, "conversation-update": 1, "voice-input": 1}


@pytest.mark.parametrize("raw", ["not json", "[1]", '"x"', '{"no": "type"}', '{"message": "x"}'])
def test_malformed_control_messages_are_protocol_errors(raw: str) -> None:
    with pytest.raises(AgentProtocolError):
        vp.VapiStream().text(raw)


# -- hang -------------------------------------------------------------------------------------------


def test_hang_is_a_notice_not_a_hangup() -> None:
    s = vp.VapiStream()
    events = s.text(msg(type="hang"))
    assert len(events) == 1 and isinstance(events[0], AgentNotice) and events[0].code == "vapi.hang"
    assert s.hangs == 1 and s.ending is None


def test_hangs_in_a_row_fail_but_assistant_audio_resets_the_count() -> None:
    s = vp.VapiStream()
    for _ in range(vp.MAX_CONSECUTIVE_HANGS - 1):
        s.text(msg(type="hang"))
    s.audio(SPEECH)  # the assistant came back
    for _ in range(vp.MAX_CONSECUTIVE_HANGS - 1):
        s.text(msg(type="hang"))
    with pytest.raises(AgentFailed, match="stalled"):
        s.text(msg(type="hang"))
    assert s.hangs == 2 * vp.MAX_CONSECUTIVE_HANGS - 1


# -- tools, transfer, end of call -------------------------------------------------------------------


def tool_calls(name: str, args: object, shape: str = "schema", declares: tuple[str, ...] | None = None) -> str:
    """A ``tool-calls`` message; ``declares``: the tool's declared parameters (its config in
    ``toolWithToolCallList``), None to send no declaration at all."""
    decl: dict[str, object] = {} if declares is None else {"function": {"name": name, "parameters": {
        "type": "object", "properties": {p: {"type": "string"} for p in declares}}}}
    if shape == "docs":
        item = {"id": "c1", "name": name, "parameters": args}
        extra = {"toolWithToolCallList": [{"name": name, "toolCall": item, **decl}]} if declares is not None else {}
        return msg(type="tool-calls", toolCallList=[item], **extra)
    fn = {"id": "c1", "type": "function", "function": {"name": name, "arguments": args}}
    if shape == "wrapped-list":
        return msg(type="tool-calls", toolWithToolCallList=[{"name": name, "toolCall": fn, **decl}])
    extra = {"toolWithToolCallList": [{"name": name, "toolCall": fn, **decl}]} if declares is not None else {}
    return msg(type="tool-calls", toolCallList=[fn], **extra)


@pytest.mark.parametrize("shape", ["schema", "docs", "wrapped-list"])
def test_end_call_tool_is_a_hangup(shape: str) -> None:
    s = vp.VapiStream()
    s.audio(SPEECH)
    events = s.text(tool_calls("end_call", {}, shape))
    assert events == [ReplyDone("vapi-1"), HangupRequest(reason="vapi tool end_call")]


@pytest.mark.parametrize("args,to", [
    ({"to": "+15557654321"}, "+15557654321"),
    ('{"number": "+15557654321"}', "+15557654321"),  # arguments as a JSON string
    ({"destination": {"type": "number", "number": "+15557654321"}}, "+15557654321"),
    ({}, None),  # → [fallback] dial
    ({"to": "sales please"}, None),
    ({"to": "+1900; <Hangup/>"}, None),
])
def test_transfer_tool_target_is_checked(args: object, to: str | None) -> None:
    declares = ("to", "number", "destination")
    assert vp.VapiStream().text(tool_calls("transfer_to_human", args, declares=declares)) == [TransferRequest(to=to)]


@pytest.mark.parametrize("shape", ["schema", "docs", "wrapped-list"])
@pytest.mark.parametrize("declares", [None, (), ("reason",)])
def test_a_target_the_tool_does_not_declare_is_ignored(shape: str, declares: tuple[str, ...] | None) -> None:
    """docs/providers.md: a transfer_to_human without a `to` parameter always dials the configured human,
    whatever the model writes into its arguments."""
    events = vp.VapiStream().text(tool_calls("transfer_to_human", {"to": "+19005551234"}, shape, declares))
    assert events == [TransferRequest(to=None)]


def test_unknown_tools_are_left_to_the_assistant_server() -> None:
    assert vp.VapiStream().text(tool_calls("lookup_order", {"id": 1})) == []


def test_transfer_update_number_and_unsupported_destinations() -> None:
    assert vp.VapiStream().text(msg(type="transfer-update", destination={"type": "number", "number": "+15557654321"})) \
        == [TransferRequest("+15557654321")]
    assert vp.VapiStream().text(msg(type="transfer-update")) == [TransferRequest(None)]
    assert vp.VapiStream().text(msg(type="transfer-update", summary="Ana, refund")) \
        == [TransferRequest(None, "Ana, refund")]
    assert vp.VapiStream().text(tool_calls("transfer_to_human", {"summary": "Ana, refund"})) \
        == [TransferRequest(None, "Ana, refund")]
    events = vp.VapiStream().text(msg(type="transfer-update", destination={"type": "assistant", "assistantName": "b"}))
    assert len(events) == 1 and isinstance(events[0], AgentNotice)


def test_first_terminal_request_wins() -> None:
    s = vp.VapiStream()
    assert s.text(tool_calls("transfer_to_human", {"to": "+15557654321"}, declares=("to",))) \
        == [TransferRequest("+15557654321")]
    # VAPI then ends its side: that must not turn the transfer into a hang-up.
    assert s.text(msg(type="status-update", status="ended", endedReason="assistant-forwarded-call")) == []
    assert s.text(msg(type="end-of-call-report", endedReason="assistant-forwarded-call")) == []
    assert s.text(tool_calls("end_call", {})) == []
    assert s.ending == "transfer"


def test_status_ended_and_end_of_call_report_are_hangups() -> None:
    assert vp.VapiStream().text(msg(type="status-update", status="ended", endedReason="assistant-ended-call")) \
        == [HangupRequest("vapi ended the call: assistant-ended-call")]
    assert vp.VapiStream().text(msg(type="end-of-call-report", endedReason="silence-timed-out")) \
        == [HangupRequest("vapi end-of-call-report: silence-timed-out")]
    assert vp.VapiStream().text(msg(type="status-update", status="in-progress")) == []


def test_ending_with_an_error_reason_is_a_provider_failure() -> None:
    with pytest.raises(AgentDisconnected, match="pipeline-error-openai-llm-failed"):
        vp.VapiStream().text(msg(type="status-update", status="ended", endedReason="pipeline-error-openai-llm-failed"))
