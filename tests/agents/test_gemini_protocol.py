"""Gemini Live messages and transcoding, sans-IO: no sockets."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from twibridge.agents.base import AgentProtocolError, AudioOut, ReplyDone, SpeechStarted, Transcript
from twibridge.agents.gemini_protocol import GeminiConnection, build_setup, build_tool_response


def model_audio(pcm: bytes, rate: int = 24000) -> str:
    return json.dumps({"serverContent": {"modelTurn": {"parts": [{"inlineData": {
        "mimeType": f"audio/pcm;rate={rate}", "data": base64.b64encode(pcm).decode()}}]}}})


def test_caller_audio_becomes_16k_pcm_messages() -> None:
    msg = json.loads(GeminiConnection().audio_message(b"\xff" * 160))
    audio = msg["realtimeInput"]["audio"]
    assert audio["mimeType"] == "audio/pcm;rate=16000" and len(base64.b64decode(audio["data"])) == 640


def test_24k_output_becomes_8k_ulaw_and_split_chunks_match() -> None:
    pcm = struct.pack("<960h", *([1000, -1000] * 480))
    whole = GeminiConnection().receive(model_audio(pcm))
    c = GeminiConnection()
    split = c.receive(model_audio(pcm[:602])) + c.receive(model_audio(pcm[602:]))
    assert len(whole) == 1 and len(whole[0].ulaw) == 320  # 40 ms
    assert b"".join(e.ulaw for e in split if isinstance(e, AudioOut)) == whole[0].ulaw


def test_interrupted_drops_until_turn_complete_then_a_new_reply() -> None:
    c = GeminiConnection()
    c.receive(model_audio(bytes(960)))
    assert c.receive('{"serverContent":{"interrupted":true}}') == [SpeechStarted()]
    assert c.receive(model_audio(bytes(960))) == []
    assert c.receive('{"serverContent":{"turnComplete":true}}') == []
    (out,) = c.receive(model_audio(bytes(960)))
    assert isinstance(out, AudioOut) and out.item_id == "gm2"


def test_transcript_fragments_are_joined_at_turn_complete() -> None:
    c = GeminiConnection()
    c.receive('{"serverContent":{"inputTranscription":{"text":"hel"}}}')
    c.receive('{"serverContent":{"inputTranscription":{"text":"lo"}}}')
    c.receive(model_audio(bytes(960)))
    c.receive('{"serverContent":{"outputTranscription":{"text":"hi there"},"generationComplete":true}}')
    assert c.receive('{"serverContent":{"turnComplete":true}}') == [Transcript("user", "hello"),
                                                                    Transcript("assistant", "hi there")]


def test_go_away_between_turns_asks_for_a_resume_and_handles_are_kept() -> None:
    c = GeminiConnection()
    c.receive('{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true}}')
    c.receive('{"sessionResumptionUpdate":{"newHandle":"h2","resumable":false}}')
    assert c.handle == "h1" and not c.resume_now
    c.receive('{"goAway":{"timeLeft":"5s"}}')
    assert c.resume_now


def test_setup_and_tool_response_shapes() -> None:
    setup = json.loads(build_setup("models/m", "Puck", "x", (), handle="h"))["setup"]
    assert setup["model"] == "models/m" and setup["sessionResumption"] == {"handle": "h"}
    err = json.loads(build_tool_response("i", "f", {"error": "boom"}))
    assert err["toolResponse"]["functionResponses"][0]["response"] == {"error": "boom"}


@pytest.mark.parametrize("raw", ["nope", "[]", '{"serverContent":{"modelTurn":{"parts":{}}}}',
                                 '{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"mimeType":"audio/pcm","data":"!!"}}]}}}',
                                 '{"toolCall":{"functionCalls":[{"name":"f"}]}}'])
def test_garbage_is_a_protocol_error(raw: str) -> None:
    with pytest.raises(AgentProtocolError):
        GeminiConnection().receive(raw)


def test_generation_complete_is_reply_done() -> None:
    c = GeminiConnection()
    c.receive(model_audio(bytes(960)))
    assert c.receive('{"serverContent":{"generationComplete":true}}') == [ReplyDone("gm1")]
