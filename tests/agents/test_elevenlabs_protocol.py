"""ElevenLabs Agents messages, sans-IO: no sockets."""

from __future__ import annotations

import json

import pytest

from twibridge.agents.base import AgentFailed, AgentProtocolError, AudioOut, ReplyDone, SpeechStarted, ToolCall
from twibridge.agents.elevenlabs_protocol import ElevenLabsConnection, build_audio_chunk, build_contextual_update


def audio(i: int, b64: str = "/w==") -> str:
    return json.dumps({"type": "audio", "audio_event": {"audio_base_64": b64, "event_id": i}})


def metadata(user_in: str = "ulaw_8000", agent_out: str = "ulaw_8000") -> str:
    return json.dumps({"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": {
        "conversation_id": "c1", "user_input_audio_format": user_in, "agent_output_audio_format": agent_out}})


def test_audio_at_or_below_the_interruption_is_dropped_and_a_new_reply_follows() -> None:
    c = ElevenLabsConnection("a")
    assert c.receive(audio(1)) == [AudioOut("el1", b"\xff")]
    assert c.receive('{"type":"interruption","interruption_event":{"event_id":3}}') == [SpeechStarted()]
    assert c.receive(audio(2)) == [] and c.receive(audio(3)) == []
    assert c.receive(audio(4)) == [AudioOut("el2", b"\xff")]
    assert c.receive('{"type":"agent_response_complete"}') == [ReplyDone("el2")]


def test_a_local_barge_in_drops_the_rest_of_the_reply_until_the_next_turn() -> None:
    c = ElevenLabsConnection("a")
    assert c.receive(audio(1)) == [AudioOut("el1", b"\xff")]
    c.interrupt()
    assert c.receive(audio(2)) == [] and c.receive(audio(3)) == []
    c.receive('{"type":"user_transcript","user_transcription_event":{"user_transcript":"wait"}}')
    assert c.receive(audio(4)) == [AudioOut("el2", b"\xff")]


def test_formats_must_be_ulaw_both_ways() -> None:
    c = ElevenLabsConnection("agent_x")
    c.receive(metadata())
    assert c.ready and c.conversation_id == "c1"
    with pytest.raises(AgentFailed, match="user_input_audio_format=pcm_16000.*ulaw_8000"):
        ElevenLabsConnection("agent_x").receive(metadata(user_in="pcm_16000"))


def test_ping_pong_and_tool_calls() -> None:
    c = ElevenLabsConnection("a")
    c.receive('{"type":"ping","ping_event":{"event_id":9,"ping_ms":50}}')
    assert c.data_to_send() == ['{"type":"pong","event_id":9}']
    (call,) = c.receive(json.dumps({"type": "client_tool_call", "client_tool_call": {
        "tool_name": "f", "tool_call_id": "t1", "parameters": {"x": 1}}}))
    assert call == ToolCall("t1", "f", '{"x":1}')
    assert json.loads(c.tool_result("t1", {"error": "boom"}) or "")["is_error"] is True
    assert c.tool_result("t1", {}) is None  # answered once


@pytest.mark.parametrize("raw", ["nope", "[1]", '{"type":"audio","audio_event":{"event_id":"1"}}',
                                 '{"type":"audio","audio_event":{"audio_base_64":"***","event_id":1}}', b"\x00"])
def test_garbage_is_a_protocol_error(raw: str | bytes) -> None:
    with pytest.raises(AgentProtocolError):
        ElevenLabsConnection("a").receive(raw)


def test_builders() -> None:
    assert json.loads(build_audio_chunk(b"\xff\x7f")) == {"user_audio_chunk": "/38="}
    assert build_contextual_update([]) is None
