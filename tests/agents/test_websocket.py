"""The websocket provider (protocol v1) against the reference agent, on loopback sockets."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, AsyncIterator

import pytest
import trio
import wsproto
from wsproto.events import AcceptConnection, Request

from fakes import SessionEvents, frames, silence, tone
from fakes.ref_agent import RefAgent
from agent_support import connect_error, connected, speak
from twibridge.agents.base import (
    AgentDisconnected, AgentFailed, AudioOut, CallInfo, HangupRequest, ReplyDone, SpeechStarted, Transcript,
    TransferRequest,
)
from twibridge.agents.websocket import SEND_TIMEOUT_S, AgentSocket, WebsocketProvider, WebsocketSession
from twibridge.config import Config, build_config

CALL = CallInfo(call_sid="CA" + "2" * 32, stream_sid="MZ" + "2" * 32, from_number="+15551230000",
                to_number="+15559870000", params={"lang": "en"})
TOKEN = "agent-token-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
UTTERANCE = silence(200) + tone(600) + silence(700)


def config(url: str, headers: dict[str, str] = HEADERS) -> Config:
    return build_config({"agent": {"provider": "websocket", "websocket": {"url": url, "headers": headers}}})


@asynccontextmanager
async def agent_server(**kwargs: Any) -> AsyncIterator[RefAgent]:
    agent = RefAgent(headers=HEADERS, **kwargs)
    async with trio.open_nursery() as nursery:
        await agent.serve(nursery)
        yield agent
        await agent.wait_for(lambda: agent.live == 0)
        nursery.cancel_scope.cancel()


def session_for(url: str, provider: WebsocketProvider | None = None
                ) -> AbstractAsyncContextManager[tuple[WebsocketSession, SessionEvents]]:
    return connected(provider or WebsocketProvider(config(url)), CALL)




async def test_start_first_with_call_and_headers_then_stop() -> None:
    with trio.fail_after(10):
        async with agent_server() as agent, session_for(agent.url):
            await agent.wait_for(lambda: agent.received)
    assert agent.upgrades[0]["authorization"] == f"Bearer {TOKEN}"
    assert agent.received[0] == {
        "type": "start", "version": 1,
        "call": {"call_sid": CALL.call_sid, "stream_sid": CALL.stream_sid, "from": "+15551230000",
                 "to": "+15559870000", "params": {"lang": "en"}, "agent": "default", "variables": {}},
        "audio": {"encoding": "mulaw", "sample_rate": 8000}}
    assert agent.received[-1] == {"type": "stop"}


async def test_audio_flows_both_ways() -> None:
    with trio.fail_after(10):
        async with agent_server(reply_ms=800) as agent, session_for(agent.url) as (session, events):
            await speak(session, UTTERANCE)
            await events.wait_for(lambda: len(events.of(Transcript)) == 2)
    assert bytes(agent.audio_in) == UTTERANCE and agent.audio_frames == len(frames(UTTERANCE))
    audio = events.of(AudioOut)
    assert {a.item_id for a in audio} == {"reply-1"} and b"".join(a.ulaw for a in audio) == tone(800)
    assert events.of(ReplyDone) == [ReplyDone("reply-1")]
    assert events.of(Transcript) == [Transcript("user", "(800 ms of speech)"),
                                     Transcript("assistant", "(800 ms reply)")]


async def test_interrupt_and_marks_reach_the_agent_and_late_audio_is_dropped() -> None:
    with trio.fail_after(10):
        async with agent_server(reply_ms=5000, pace_s=0.02) as agent, session_for(agent.url) as (session, events):
            await speak(session, UTTERANCE)
            await events.wait_for(lambda: len(events.of(AudioOut)) >= 3)
            await session.mark_played("reply-1", 100)
            await session.interrupt("reply-1", 180)
            n_audio = len(events.of(AudioOut))
            await agent.wait_for(lambda: agent.of_type("interrupt"))
            await session.send_dtmf("5")
            await agent.wait_for(lambda: agent.of_type("dtmf"))
    assert agent.of_type("mark") == [{"type": "mark", "item_id": "reply-1", "played_ms": 100}]
    assert agent.of_type("interrupt") == [{"type": "interrupt", "item_id": "reply-1", "heard_ms": 180}]
    assert len(events.of(AudioOut)) == n_audio and events.of(ReplyDone) == []


async def test_agent_side_barge_in_is_speech_started() -> None:
    with trio.fail_after(10):
        async with agent_server(reply_ms=5000, pace_s=0.02) as agent, session_for(agent.url) as (session, events):
            await speak(session, UTTERANCE)
            await events.wait_for(lambda: events.of(AudioOut))
            await speak(session, tone(200))
            await events.wait_for(lambda: events.of(SpeechStarted))
    assert events.of(SpeechStarted) == [SpeechStarted(None)]


async def test_hangup_and_transfer_from_dtmf() -> None:
    with trio.fail_after(10):
        async with agent_server() as agent, session_for(agent.url) as (session, events):
            await session.send_dtmf("0")
            await events.wait_for(lambda: events.of(TransferRequest))
            await session.send_dtmf("#")
            await events.wait_for(lambda: events.of(HangupRequest))
    assert events.of(TransferRequest) == [TransferRequest("+15550001111")]
    assert events.of(HangupRequest) == [HangupRequest("caller pressed #")]


async def test_fatal_agent_error_is_agent_failed() -> None:
    with trio.fail_after(10):
        async with agent_server() as agent:
            agent.refuse_call = "number not in service"
            async with session_for(agent.url) as (session, events):
                await events.wait_for(lambda: events.error)
    assert isinstance(events.error, AgentFailed) and "number not in service" in str(events.error)


async def test_refusals_and_unreachable() -> None:
    with trio.fail_after(10):
        async with agent_server() as agent:
            bad = await connect_error(WebsocketProvider(config(agent.url, {"Authorization": "Bearer nope"})), CALL)
            assert type(bad) is AgentFailed and "401" in str(bad)
            agent.reject_status = 503
            busy = await connect_error(WebsocketProvider(config(agent.url)), CALL)
            assert type(busy) is AgentDisconnected and "503" in str(busy)
        gone = await connect_error(WebsocketProvider(config("ws://127.0.0.1:1/agent")), CALL)
        assert type(gone) is AgentDisconnected
        assert type(await connect_error(WebsocketProvider(config("http://127.0.0.1:1/agent")), CALL)) is AgentFailed


async def test_drop_mid_call_is_agent_disconnected() -> None:
    with trio.fail_after(10):
        async with agent_server() as agent, session_for(agent.url) as (session, events):
            agent.drop_after_frames = 10
            try:
                await speak(session, silence(2000))
            except AgentDisconnected:
                pass
            await events.wait_for(lambda: events.error)
    assert isinstance(events.error, AgentDisconnected)


async def test_keepalive_pings_a_live_agent_without_trouble() -> None:
    with trio.fail_after(10):
        async with agent_server() as agent:
            provider = WebsocketProvider(config(agent.url))
            provider.ping_interval_s, provider.pong_timeout_s = 0.02, 1.0
            async with session_for(agent.url, provider) as (session, events):
                await trio.sleep(0.2)  # several ping/pong rounds: the thing under test is time itself
                await speak(session, UTTERANCE)
                await events.wait_for(lambda: events.of(ReplyDone))
                assert events.error is None


async def test_keepalive_detects_an_agent_that_stopped_answering() -> None:
    """A peer that completes the handshake and then ignores everything, pings included."""

    async def deaf(stream: trio.SocketStream) -> None:
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        async with stream:
            while data := await stream.receive_some(65536):
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        await stream.send_all(ws.send(AcceptConnection()))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, deaf, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            provider = WebsocketProvider(config(f"ws://127.0.0.1:{port}/agent"))
            provider.ping_interval_s, provider.pong_timeout_s = 0.05, 0.2
            async with session_for("", provider) as (session, events):
                await events.wait_for(lambda: events.error)
            nursery.cancel_scope.cancel()
    assert isinstance(events.error, AgentDisconnected) and "no pong" in str(events.error)


async def test_header_secrets_absent_from_logs(captured_logs: Any) -> None:
    with trio.fail_after(10):
        async with agent_server() as agent:
            async with session_for(agent.url) as (session, events):
                await speak(session, UTTERANCE)
                await events.wait_for(lambda: events.of(ReplyDone))
            await connect_error(WebsocketProvider(config(agent.url, {"Authorization": "Bearer wrong-token-abcdef"})), CALL)
    assert TOKEN not in captured_logs.text and "wrong-token-abcdef" not in captured_logs.text


async def test_goodbye_survives_the_supervisors_cancel_then_aclose_order() -> None:
    """The supervisor cancels the connection's nursery first and only then calls aclose()."""
    with trio.fail_after(10):
        async with agent_server() as agent:
            async with trio.open_nursery() as nursery:
                session = await WebsocketProvider(config(agent.url)).connect(CALL, nursery)
                await session.send_dtmf("1")
                nursery.cancel_scope.cancel()
                started = trio.current_time()
                with trio.move_on_after(2, shield=True):
                    await session.aclose()
                assert trio.current_time() - started < 0.5  # no wait for a close reply nobody can read
            await agent.wait_for(lambda: agent.of_type("stop"))
    assert [m["type"] for m in agent.received] == ["start", "dtmf", "stop"]


async def test_handshake_is_bounded_by_the_callers_deadline() -> None:
    """The supervisor wraps connect() in fail_after: a silent server must not hold it (nor leak a socket)."""

    async def silent(stream: trio.SocketStream) -> None:
        async with stream:
            while await stream.receive_some(65536):
                pass

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            provider = WebsocketProvider(config(f"ws://127.0.0.1:{port}/agent"))
            async with trio.open_nursery() as session_nursery:
                with trio.move_on_after(0.3) as scope:
                    await provider.connect(CALL, session_nursery)
            assert scope.cancelled_caught
            nursery.cancel_scope.cancel()


class EncodingWs:
    """trio-websocket's send path in miniature: encode (the connection's state moves on), then wait
    for the stream's lock and the socket.  A cancel in the wait would lose an encoded frame."""

    def __init__(self, wire_s: float = 0.003) -> None:
        self.encoded: list[str | bytes] = []
        self.written: list[str | bytes] = []
        self.wire_s = wire_s

    async def send_message(self, message: str | bytes) -> None:
        self.encoded.append(message)
        await trio.sleep(self.wire_s)
        self.written.append(message)

    async def get_message(self) -> str | bytes:
        await trio.sleep_forever()
        raise AssertionError


async def test_a_cancelled_send_still_writes_what_it_encoded_and_nothing_after(autojump_clock: Any) -> None:
    ws = EncodingWs()
    sock = AgentSocket(ws, "agent", trio.CancelScope())  # type: ignore[arg-type]
    for cancel_after in (0.001, 0.004, 0.0075):  # inside the first, second, third message's wait
        ws.encoded.clear(), ws.written.clear()
        with trio.move_on_after(cancel_after) as scope:
            await sock.send("cancel", "truncate", "create", "append")
        assert scope.cancelled_caught
        assert ws.written == ws.encoded  # never encoded and then dropped
        assert 1 <= len(ws.written) < 4  # the cancel landed between messages


async def test_a_send_the_agent_never_takes_breaks_the_socket_after_a_bound(autojump_clock: Any) -> None:
    ws = EncodingWs(wire_s=3600)
    sock = AgentSocket(ws, "agent", trio.CancelScope())  # type: ignore[arg-type]
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        receive_error: list[BaseException] = []

        async def receive() -> None:
            try:
                await sock.receive()
            except AgentDisconnected as exc:
                receive_error.append(exc)

        nursery.start_soon(receive)
        await trio.sleep(0)
        with pytest.raises(AgentDisconnected, match="send took over"):
            await sock.send(b"\xff" * 160)
    assert trio.current_time() - t0 == pytest.approx(SEND_TIMEOUT_S)
    assert len(receive_error) == 1  # the pending receive was woken: the supervisor reconnects
    with pytest.raises(AgentDisconnected):
        await sock.send(b"\xff" * 160)  # nothing more on a socket that may hold half a frame
    assert len(ws.encoded) == 1
