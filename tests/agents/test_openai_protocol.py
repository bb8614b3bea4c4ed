"""OpenAI Realtime GA message layer: text in, events out; calls in, exact text out (h11 style)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from twibridge.agents import openai_protocol as op
from twibridge.agents.base import (
    AgentFailed, AgentNotice, AgentProtocolError, AudioOut, HangupRequest, ReplyDone, SpeechStarted, Transcript,
    ToolCall, ToolSpec, TransferRequest,
)


def ev(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "event_id": "event_1", **fields})


def delta(resp: str, item: str, audio: bytes) -> str:
    return ev("response.output_audio.delta", response_id=resp, item_id=item, output_index=0, content_index=0,
              delta=base64.b64encode(audio).decode())


def ready_conn() -> op.RealtimeConnection:
    conn = op.RealtimeConnection("gpt-realtime", "marin", "Be brief.")
    assert conn.receive(ev("session.created", session={"type": "realtime"})) == []
    assert not conn.ready
    assert conn.receive(ev("session.updated", session={"type": "realtime"})) == []
    assert conn.ready
    return conn


def test_session_update_is_the_ga_shape() -> None:
    msg = json.loads(op.build_session_update("gpt-realtime", "marin", "Be brief."))
    assert msg["type"] == "session.update"
    s = msg["session"]
    assert s["type"] == "realtime" and s["model"] == "gpt-realtime" and s["output_modalities"] == ["audio"]
    assert s["instructions"] == "Be brief."
    assert s["audio"]["input"] == {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"}}
    assert s["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "marin"}
    assert [t["name"] for t in s["tools"]] == ["end_call", "transfer_to_human"]
    assert all(t["type"] == "function" and t["parameters"]["type"] == "object" for t in s["tools"])
    # transfer takes no number: the model must not pick where a call goes
    assert set(s["tools"][1]["parameters"]["properties"]) == {"reason", "summary"}  # a summary, no number
    # nothing of the retired beta
    flat = json.dumps(msg)
    for beta in ("g711_ulaw", "input_audio_format", "output_audio_format", "modalities\""):
        assert beta not in flat.replace("output_modalities\"", "")


def test_session_update_with_transcription() -> None:
    s = json.loads(op.build_session_update("m", "v", "i", transcribe_model="gpt-4o-mini-transcribe"))["session"]
    assert s["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}


def test_client_builders_exact_text() -> None:
    assert op.build_audio_append(b"\xff\x00") == '{"type":"input_audio_buffer.append","audio":"/wA="}'
    assert json.loads(op.build_audio_append(bytes(160)))["audio"] == base64.b64encode(bytes(160)).decode()
    assert op.build_response_cancel() == '{"type":"response.cancel"}'
    assert op.build_truncate("item_1", 1234) == (
        '{"type":"conversation.item.truncate","item_id":"item_1","content_index":0,"audio_end_ms":1234}')
    assert op.build_response_create() == '{"type":"response.create"}'
    out = json.loads(op.build_function_call_output("call_1", {"ok": True}))
    assert out == {"type": "conversation.item.create",
                   "item": {"type": "function_call_output", "call_id": "call_1", "output": '{"ok":true}'}}


def test_history_items() -> None:
    user = json.loads(op.build_history_item("user", "Where is my order?"))
    assert user["item"] == {"type": "message", "role": "user",
                            "content": [{"type": "input_text", "text": "Where is my order?"}]}
    bot = json.loads(op.build_history_item("assistant", "It ships today."))
    assert bot["item"]["role"] == "assistant" and bot["item"]["content"][0]["type"] == "output_text"
    conn = op.RealtimeConnection("m", "v", "i")
    msgs = conn.start([Transcript("user", "hi"), Transcript("assistant", ""), Transcript("assistant", "hello")])
    assert [json.loads(m)["type"] for m in msgs] == ["session.update", "conversation.item.create",
                                                     "conversation.item.create"]


def test_audio_flow_and_reply_done() -> None:
    conn = ready_conn()
    assert conn.receive(ev("input_audio_buffer.speech_started", audio_start_ms=1200, item_id="u1")) == [
        SpeechStarted(1200)]
    conn.receive(ev("response.created", response={"id": "resp_1", "status": "in_progress"}))
    assert conn.active_response == "resp_1"
    assert conn.receive(delta("resp_1", "item_a", b"\x01" * 800)) == [AudioOut("item_a", b"\x01" * 800)]
    assert conn.receive(ev("response.output_audio.done", response_id="resp_1", item_id="item_a")) == [
        ReplyDone("item_a")]
    assert conn.receive(ev("response.output_audio_transcript.done", response_id="resp_1", item_id="item_a",
                           transcript="Hello!")) == [Transcript("assistant", "Hello!", item_id="item_a")]
    assert conn.receive(ev("conversation.item.input_audio_transcription.completed", item_id="u1",
                           content_index=0, transcript="Hi there")) == [Transcript("user", "Hi there")]
    assert conn.receive(ev("response.done", response={"id": "resp_1", "status": "completed"})) == []
    assert conn.active_response is None


def test_interrupt_cancels_truncates_and_drops_late_deltas() -> None:
    conn = ready_conn()
    conn.receive(ev("response.created", response={"id": "resp_1"}))
    conn.receive(delta("resp_1", "item_a", b"\x01" * 8000))  # 1000 ms generated
    assert conn.interrupt("item_a", 640) == [
        '{"type":"response.cancel"}',
        '{"type":"conversation.item.truncate","item_id":"item_a","content_index":0,"audio_end_ms":640}']
    assert set(conn.cancelled) == {"resp_1"}
    # deltas already in flight for the cancelled response are dropped, and so is its done
    assert conn.receive(delta("resp_1", "item_a", b"\x02" * 800)) == []
    assert conn.receive(ev("response.output_audio.done", response_id="resp_1", item_id="item_a")) == []
    conn.receive(ev("response.done", response={"id": "resp_1", "status": "cancelled"}))
    assert set(conn.cancelled) == set() and conn.active_response is None
    # the next response plays
    conn.receive(ev("response.created", response={"id": "resp_2"}))
    assert conn.receive(delta("resp_2", "item_b", b"\x03" * 160)) == [AudioOut("item_b", b"\x03" * 160)]


def test_interrupt_skips_truncate_at_zero_and_for_unknown_items() -> None:
    conn = ready_conn()
    conn.receive(ev("response.created", response={"id": "resp_1"}))
    conn.receive(delta("resp_1", "item_a", b"\x01" * 800))
    assert conn.interrupt("item_a", 0) == ['{"type":"response.cancel"}']
    assert conn.interrupt(None, 500) == ['{"type":"response.cancel"}']
    # an item of an earlier connection does not exist in this session
    assert conn.interrupt("item_from_before_reconnect", 500) == ['{"type":"response.cancel"}']


def test_interrupt_after_the_response_finished_still_truncates_and_clamps() -> None:
    conn = ready_conn()
    conn.receive(ev("response.created", response={"id": "resp_1"}))
    conn.receive(delta("resp_1", "item_a", b"\x01" * 4000))  # 500 ms
    conn.receive(ev("response.done", response={"id": "resp_1", "status": "completed"}))
    msgs = conn.interrupt("item_a", 900)  # never beyond what was generated: the server rejects that
    assert json.loads(msgs[1])["audio_end_ms"] == 500
    assert set(conn.cancelled) == set()  # nothing active to drop
    # the harmless "nothing to cancel" answer is not surfaced
    assert conn.receive(ev("error", error={"type": "invalid_request_error", "code": "response_cancel_not_active",
                                           "message": "Cancellation failed: no active response found"})) == []


@pytest.mark.parametrize("with_name", [True, False])
def test_end_call_function(with_name: bool) -> None:
    conn = ready_conn()
    done: dict[str, Any] = {"response_id": "r", "item_id": "fc", "output_index": 1, "call_id": "call_9",
                            "arguments": '{"reason":"customer said bye"}'}
    if with_name:
        done["name"] = "end_call"
    events = conn.receive(ev("response.function_call_arguments.done", **done))
    item = {"id": "fc", "type": "function_call", "call_id": "call_9", "name": "end_call",
            "arguments": '{"reason":"customer said bye"}', "status": "completed"}
    events += conn.receive(ev("response.output_item.done", response_id="r", output_index=1, item=item))
    assert events == [HangupRequest("end_call: customer said bye")]  # once, whichever event names it
    replies = [json.loads(m) for m in conn.data_to_send()]
    assert replies == [{"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "call_9", "output": '{"ok":true,"status":"hanging up"}'}}]
    assert conn.data_to_send() == []


def test_transfer_function_answers_then_lets_the_model_speak() -> None:
    conn = ready_conn()
    events = conn.receive(ev("response.function_call_arguments.done", response_id="r", item_id="fc",
                             output_index=1, call_id="call_1", name="transfer_to_human",
                             arguments='{"reason":"billing","to":"+19005550000"}'))
    assert events == [TransferRequest(None)]  # a number the model made up is ignored
    assert [json.loads(m)["type"] for m in conn.data_to_send()] == ["conversation.item.create", "response.create"]


def test_transfer_carries_the_models_summary_for_a_warm_transfer() -> None:
    conn = ready_conn()
    events = conn.receive(ev("response.function_call_arguments.done", response_id="r", item_id="fc",
                             output_index=1, call_id="call_2", name="transfer_to_human",
                             arguments='{"reason":"billing","summary":"  Ana wants a refund.  "}'))
    assert events == [TransferRequest(None, "Ana wants a refund.")]
    long = conn.receive(ev("response.function_call_arguments.done", response_id="r", item_id="fc2",
                           output_index=1, call_id="call_3", name="transfer_to_human",
                           arguments=json.dumps({"summary": "x" * 5000})))
    assert isinstance(long[0], TransferRequest) and long[0].summary is not None and len(long[0].summary) == 600


def test_other_functions_go_to_the_tools_executor() -> None:
    conn = ready_conn()
    events = conn.receive(ev("response.function_call_arguments.done", call_id="c1", name="get_weather",
                             arguments="{}"))
    assert events == [ToolCall("c1", "get_weather", "{}")]  # unknown ones too: the executor answers them
    assert conn.data_to_send() == []  # nothing until the result
    # the same call again in response.output_item.done is not run twice
    item = {"id": "fc", "type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"}
    assert conn.receive(ev("response.output_item.done", response_id="r", output_index=1, item=item)) == []
    # the model writing broken JSON arguments is not a protocol error
    assert conn.receive(ev("response.function_call_arguments.done", call_id="c2", name="end_call",
                           arguments="{oops")) == [HangupRequest("end_call")]


def test_functions_are_declared_with_their_schema() -> None:
    spec = ToolSpec("lookup_order", "Look up an order", {"type": "object", "properties": {}})
    conn = op.RealtimeConnection("m", "v", "i", tools=(spec,))
    session = json.loads(conn.start()[0])["session"]
    assert [t["name"] for t in session["tools"]] == ["end_call", "transfer_to_human", "lookup_order"]
    assert session["tools"][2] == {"type": "function", "name": "lookup_order", "description": "Look up an order",
                                   "parameters": {"type": "object", "properties": {}}}


def test_response_create_waits_for_every_result_and_the_active_response() -> None:
    conn = ready_conn()
    conn.receive(ev("response.created", response={"id": "r1"}))
    for cid in ("a", "b"):
        conn.receive(ev("response.function_call_arguments.done", call_id=cid, name="f", arguments="{}"))
    first = [json.loads(m) for m in conn.tool_result("a", {"x": 1})]
    assert [m["type"] for m in first] == ["conversation.item.create"]  # b still runs
    assert first[0]["item"] == {"type": "function_call_output", "call_id": "a", "output": '{"x":1}'}
    assert [json.loads(m)["type"] for m in conn.tool_result("b", {"error": "no"})] == ["conversation.item.create"]
    conn.receive(ev("response.done", response={"id": "r1", "status": "completed"}))
    assert [json.loads(m)["type"] for m in conn.data_to_send()] == ["response.create"]  # r1 over: now
    conn.receive(ev("response.function_call_arguments.done", call_id="c", name="f", arguments="{}"))
    assert [json.loads(m)["type"] for m in conn.tool_result("c", {})] == ["conversation.item.create",
                                                                          "response.create"]
    assert conn.tool_result("from-before-a-reconnect", {}) == []  # unknown here: the server would refuse it


def test_output_item_done_for_messages_is_ignored() -> None:
    conn = ready_conn()
    item = {"id": "i", "type": "message", "role": "assistant", "content": []}
    assert conn.receive(ev("response.output_item.done", response_id="r", output_index=0, item=item)) == []


def test_errors() -> None:
    conn = ready_conn()
    assert conn.receive(ev("error", error={"type": "invalid_request_error", "code": "invalid_value",
                                           "message": "Audio content of 500ms is already shorter than 900ms"})) == [
        AgentNotice("Audio content of 500ms is already shorter than 900ms", "invalid_value")]
    with pytest.raises(AgentFailed, match="invalid_api_key"):
        conn.receive(ev("error", error={"type": "invalid_request_error", "code": "invalid_api_key",
                                        "message": "Incorrect API key provided"}))
    with pytest.raises(AgentFailed, match="insufficient_quota"):
        conn.receive(ev("error", error={"type": "insufficient_quota", "code": "insufficient_quota", "message": ""}))


def test_error_before_session_updated_is_fatal() -> None:
    conn = op.RealtimeConnection("m", "v", "i")
    with pytest.raises(AgentFailed, match="session.update"):
        conn.receive(ev("error", error={"type": "invalid_request_error", "code": "unknown_parameter",
                                        "message": "Unknown parameter: 'session.input_audio_format'."}))


def test_failed_response_is_a_notice() -> None:
    conn = ready_conn()
    done = {"id": "r", "status": "failed", "status_details": {"type": "failed", "error": {
        "type": "server_error", "code": "server_error", "message": "The server had an error"}}}
    assert conn.receive(ev("response.done", response=done)) == [
        AgentNotice("response failed: The server had an error", "server_error")]


def test_unknown_and_beta_events_are_ignored() -> None:
    conn = ready_conn()
    for kind in ("rate_limits.updated", "conversation.item.added", "response.audio.delta", "future.thing",
                 "response.output_audio_transcript.delta", "input_audio_buffer.speech_stopped"):
        assert conn.receive(ev(kind, anything=1)) == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"type":"x"}', "binary"),
        ("{nope", "malformed JSON"),
        ("[]", "not a JSON object"),
        ('{"type": 5}', "'type'"),
        (ev("response.output_audio.delta", response_id="r", item_id="i", delta="***"), "base64"),
        (ev("response.output_audio.delta", response_id="r", item_id=3, delta=""), "'item_id'"),
        (ev("response.output_audio.done", response_id="r"), "'item_id'"),
        (ev("response.created", response="r"), "'response'"),
        (ev("input_audio_buffer.speech_started", audio_start_ms="12"), "'audio_start_ms'"),
        (ev("response.output_audio_transcript.done", transcript=None), "'transcript'"),
        (ev("response.output_item.done", item={"type": "function_call", "name": "end_call"}), "'call_id'"),
        (ev("error", error="boom"), "'error'"),
    ],
)
def test_broken_server_messages_are_protocol_errors(raw: str | bytes, reason: str) -> None:
    with pytest.raises(AgentProtocolError, match=reason):
        ready_conn().receive(raw)


def test_item_tracking_is_bounded() -> None:
    conn = ready_conn()
    for n in range(op.MAX_TRACKED_ITEMS + 5):
        conn.receive(delta("r", f"item_{n}", b"\x01" * 80))
    assert conn.interrupt("item_0", 5) == ['{"type":"response.cancel"}']  # forgotten: no truncate
    assert len(conn.interrupt(f"item_{op.MAX_TRACKED_ITEMS + 4}", 5)) == 2


def test_truncated_items_give_the_text_as_heard() -> None:
    """conversation.item.truncated: the item's transcript cut where its audio was (before or after the text)."""
    from twibridge.agents.openai_protocol import heard_text

    assert heard_text("one two three four", 500, 1000) == "one two…"
    assert heard_text("one two three four", 1000, 1000) == "one two three four"
    assert heard_text("one", 10, 1000) == "…"
    conn = op.RealtimeConnection("m", "v", "i")
    conn.receive(ev("session.updated"))
    conn.receive(delta("resp_1", "item_a", b"\x01" * 8000))  # 1000 ms generated
    text_ev = ev("response.output_audio_transcript.done", response_id="resp_1", item_id="item_a",
                 transcript="one two three four")
    assert conn.receive(text_ev) == [Transcript("assistant", "one two three four", item_id="item_a")]
    assert conn.receive(ev("conversation.item.truncated", item_id="item_a", content_index=0,
                           audio_end_ms=500)) == [Transcript("assistant", "one two…", item_id="item_a",
                                                             truncated=True)]
    # the cut before the text: the text comes cut
    conn.receive(delta("resp_2", "item_b", b"\x01" * 8000))
    assert conn.receive(ev("conversation.item.truncated", item_id="item_b", content_index=0, audio_end_ms=500)) == []
    assert conn.receive(ev("response.output_audio_transcript.done", response_id="resp_2", item_id="item_b",
                           transcript="alpha beta gamma delta"))[1] == Transcript(
        "assistant", "alpha beta…", item_id="item_b", truncated=True)


def test_response_done_usage_is_reported() -> None:
    from twibridge.agents.base import Usage

    conn = op.RealtimeConnection("m", "v", "i")
    usage = {"total_tokens": 12, "output_token_details": {"audio_tokens": 2}}
    assert conn.receive(ev("response.done", response={"id": "r1", "status": "completed", "usage": usage})) == [
        Usage(usage)]
