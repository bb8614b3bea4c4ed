"""Deepgram Voice Agent messages, sans-IO: no sockets."""

from __future__ import annotations

import json

import pytest

from twibridge.agents.base import (
    AgentDisconnected, AgentFailed, AgentNotice, AgentProtocolError, AudioOut, ReplyDone, SpeechStarted, ToolCall,
    Transcript, TransferRequest,
)
from twibridge.agents.deepgram_protocol import DeepgramConnection, DeepgramSettings, build_settings


def ready() -> DeepgramConnection:
    c = DeepgramConnection(DeepgramSettings(prompt="p"))
    c.receive('{"type":"Welcome","request_id":"r"}')
    assert json.loads(c.data_to_send()[0])["type"] == "Settings"
    c.receive('{"type":"SettingsApplied"}')
    return c


def test_nothing_is_sent_before_welcome_and_audio_before_ready_is_refused() -> None:
    c = DeepgramConnection(DeepgramSettings())
    assert c.data_to_send() == []
    with pytest.raises(AgentProtocolError):
        c.receive(b"\xff" * 160)


def test_replies_are_counted_and_late_audio_after_a_cut_is_dropped() -> None:
    c = ready()
    c.receive('{"type":"AgentStartedSpeaking"}')
    assert c.receive(b"\x01\x02") == [AudioOut("dg1", b"\x01\x02")]
    c.interrupt()
    assert c.receive(b"\x03") == [] and c.receive('{"type":"AgentAudioDone"}') == []
    c.receive('{"type":"AgentStartedSpeaking"}')
    assert c.receive(b"\x04") == [AudioOut("dg2", b"\x04")]
    assert c.receive('{"type":"UserStartedSpeaking"}') == [SpeechStarted()]
    assert c.receive(b"\x05") == []
    c.receive('{"type":"AgentStartedSpeaking"}')
    c.receive(b"\x06")
    assert c.receive('{"type":"AgentAudioDone"}') == [ReplyDone("dg3")]


def test_function_calls_client_side_only_and_cancelled_ones_unanswered() -> None:
    c = ready()
    events = c.receive(json.dumps({"type": "FunctionCallRequest", "functions": [
        {"id": "a", "name": "lookup", "arguments": '{"x":1}', "client_side": True},
        {"id": "b", "name": "server_fn", "arguments": "{}", "client_side": False},
        {"id": "c", "name": "transfer_to_human", "arguments": "{}", "client_side": True}]}))
    assert events == [ToolCall("a", "lookup", '{"x":1}'), TransferRequest(None)]
    assert json.loads(c.data_to_send()[0])["id"] == "c"  # built-ins are answered at once
    c.receive('{"type":"FunctionCallCancelled","functions":[{"id":"a","name":"lookup"}]}')
    assert c.tool_result("a", "lookup", {"ok": 1}) is None and "a" in c.cancelled


def test_errors_warnings_and_transcripts() -> None:
    with pytest.raises(AgentFailed, match="INVALID_SETTINGS"):
        DeepgramConnection(DeepgramSettings()).receive('{"type":"Error","code":"INVALID_SETTINGS","description":"x"}')
    c = ready()
    assert c.receive('{"type":"Warning","code":"PROMPT_TOO_LONG","description":"long"}') == [
        AgentNotice("long", "PROMPT_TOO_LONG")]
    assert c.receive('{"type":"ConversationText","role":"assistant","content":"hi"}') == [Transcript("assistant", "hi")]
    with pytest.raises(AgentDisconnected, match="ASR_CONNECTION_CLOSED"):
        c.receive('{"type":"Error","code":"ASR_CONNECTION_CLOSED","description":"x"}')
    for garbage in ("nope", "[]", '{"type":1}', '{"type":"ConversationText","role":"user"}'):
        with pytest.raises(AgentProtocolError):
            ready().receive(garbage)


def test_settings_with_history_has_context_and_no_greeting() -> None:
    s = json.loads(build_settings(DeepgramSettings(greeting="Hi"), (), [Transcript("user", "hello")]))
    assert s["agent"]["context"] == {"messages": [{"type": "History", "role": "user", "content": "hello"}]}
    assert "greeting" not in s["agent"]
