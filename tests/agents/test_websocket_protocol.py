"""twibridge agent protocol v1, the bridge's side: exact text out, events in (h11 style)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from twibridge.agents import websocket_protocol as wp
from twibridge.agents.base import (
    AgentFailed, AgentNotice, AgentProtocolError, AudioOut, CallInfo, HangupRequest, ReplyDone, SpeechStarted,
    ToolCall, ToolSpec, Transcript, TransferRequest,
)


def msg(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


def audio(item: str, ulaw: bytes) -> str:
    return msg("audio", item_id=item, audio=base64.b64encode(ulaw).decode())


def test_start_message() -> None:
    call = CallInfo(call_sid="CA1", stream_sid="MZ1", account_sid="AC1", from_number="+15551230000",
                    to_number="+15559870000", params={"lang": "en"})
    assert json.loads(wp.build_start(call)) == {
        "type": "start", "version": 1,
        "call": {"call_sid": "CA1", "stream_sid": "MZ1", "from": "+15551230000", "to": "+15559870000",
                 "params": {"lang": "en"}, "agent": "default", "variables": {}},
        "audio": {"encoding": "mulaw", "sample_rate": 8000},
    }
    routed = CallInfo(call_sid="CA1", stream_sid="MZ1", agent="sales", variables={"customer_name": "Ada"})
    call_part = json.loads(wp.build_start(routed))["call"]
    assert (call_part["agent"], call_part["variables"]) == ("sales", {"customer_name": "Ada"})


def test_start_lists_the_calls_tools_and_tool_messages() -> None:
    spec = ToolSpec("lookup_order", "Look up an order", {"type": "object", "properties": {}})
    start = json.loads(wp.build_start(CallInfo(call_sid="CA1", stream_sid="MZ1", tools=(spec,))))
    assert start["tools"] == [{"name": "lookup_order", "description": "Look up an order",
                               "parameters": {"type": "object", "properties": {}}}]
    assert wp.build_tool_result("c1", "lookup_order", {"status": "shipped"}) == (
        '{"type":"tool_result","call_id":"c1","name":"lookup_order","output":{"status":"shipped"}}')
    conn = wp.AgentConnection()
    assert conn.receive(msg("tool_call", call_id="c1", name="lookup_order", arguments={"order_number": "42"})) == [
        ToolCall("c1", "lookup_order", '{"order_number":"42"}')]
    assert conn.receive(msg("tool_call", call_id="c2", name="x", arguments="{oops")) == [ToolCall("c2", "x", "{oops")]
    assert conn.receive(msg("tool_call", call_id="c3", name="x")) == [ToolCall("c3", "x", "{}")]
    for bad in (msg("tool_call", name="x"), msg("tool_call", call_id="c", name="x", arguments=[1])):
        with pytest.raises(AgentProtocolError):
            conn.receive(bad)


def test_start_carries_the_history_only_after_a_failover() -> None:
    from twibridge.agents.base import Transcript

    call = CallInfo(call_sid="CA1", stream_sid="MZ1")
    assert "history" not in json.loads(wp.build_start(call, []))
    start = json.loads(wp.build_start(call, [Transcript("user", "hi"), Transcript("assistant", "hello")]))
    assert start["history"] == [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello"}]


def test_bridge_messages_exact_text() -> None:
    assert wp.build_dtmf("5") == '{"type":"dtmf","digit":"5"}'
    assert wp.build_interrupt("reply-1", 640) == '{"type":"interrupt","item_id":"reply-1","heard_ms":640}'
    assert wp.build_interrupt(None, -3) == '{"type":"interrupt","item_id":null,"heard_ms":0}'
    assert wp.build_mark("reply-1", 300) == '{"type":"mark","item_id":"reply-1","played_ms":300}'
    assert wp.build_stop() == '{"type":"stop"}'


def test_every_agent_message() -> None:
    conn = wp.AgentConnection()
    assert conn.receive(audio("r1", b"\x01\x02")) == [AudioOut("r1", b"\x01\x02")]
    assert conn.receive(msg("reply_done", item_id="r1")) == [ReplyDone("r1")]
    assert conn.receive(msg("clear")) == [SpeechStarted(None)]
    assert conn.receive(msg("hangup", reason="done")) == [HangupRequest("done")]
    assert conn.receive(msg("hangup")) == [HangupRequest("agent")]
    assert conn.receive(msg("transfer", to="+15550001111")) == [TransferRequest("+15550001111")]
    assert conn.receive(msg("transfer")) == [TransferRequest(None)]
    assert conn.receive(msg("transfer", summary="Ana, refund")) == [TransferRequest(None, "Ana, refund")]
    assert conn.receive(msg("transfer", summary=42)) == [TransferRequest(None)]  # not a string: no summary
    assert conn.receive(msg("transcript", role="user", text="hi")) == [Transcript("user", "hi")]
    assert conn.receive(msg("error", message="tts slow", code="tts")) == [AgentNotice("tts slow", "tts")]


def test_unknown_types_and_fields_are_ignored() -> None:
    conn = wp.AgentConnection()
    assert conn.receive(msg("future_thing", x=1)) == []
    assert conn.receive(msg("reply_done", item_id="r1", extra={"a": 1})) == [ReplyDone("r1")]
    assert conn.receive(audio("r1", b"")) == []  # empty audio is no event


def test_fatal_error_fails_the_agent() -> None:
    with pytest.raises(AgentFailed, match="unsupported version"):
        wp.AgentConnection().receive(msg("error", message="unsupported version", fatal=True))


def test_late_audio_of_an_interrupted_item_is_dropped() -> None:
    conn = wp.AgentConnection()
    assert conn.interrupt("r1", 250) == '{"type":"interrupt","item_id":"r1","heard_ms":250}'
    assert conn.receive(audio("r1", b"\x01")) == []
    assert conn.receive(msg("reply_done", item_id="r1")) == []
    assert conn.receive(audio("r2", b"\x02")) == [AudioOut("r2", b"\x02")]
    for n in range(wp.MAX_INTERRUPTED_ITEMS + 1):  # bounded memory
        conn.interrupt(f"x{n}", 0)
    assert len(conn.interrupted) == wp.MAX_INTERRUPTED_ITEMS
    assert conn.receive(audio("r1", b"\x01")) == [AudioOut("r1", b"\x01")]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x00\x01", "binary"),
        ("nope", "malformed JSON"),
        ('"audio"', "not a JSON object"),
        ('{"item_id":"r1"}', "'type'"),
        (msg("audio", item_id="r1", audio="%%%"), "base64"),
        (msg("audio", item_id="r1"), "'audio'"),
        (msg("audio", item_id="", audio=""), "'item_id'"),
        (msg("reply_done", item_id=7), "'item_id'"),
        (msg("transcript", role="system", text="x"), "'role'"),
        (msg("transfer", to=15550001111), "'to'"),
        (msg("hangup", reason=["x"]), "'reason'"),
    ],
)
def test_broken_agent_messages_are_protocol_errors(raw: str | bytes, reason: str) -> None:
    with pytest.raises(AgentProtocolError, match=reason):
        wp.AgentConnection().receive(raw)
