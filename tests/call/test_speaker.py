"""The speaker: how reply audio is cut into messages and paced, and that no send is ever half done.

Most tests drive :class:`Speaker` on Trio's autojump clock against
:class:`FakeTwilio`, a model of Twilio's end of the socket (it plays media in
real time from arrival, echoes each mark once the audio before it has played,
and drops its queue on ``clear``).  Virtual time makes "at once" and "without
a gap" exact statements, not timings.  The first test runs the real bridge.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import trio

from support import Leg, bridge, make_config, media_socket, silence
from twibridge.agents.base import AgentEvent, AudioOut, CallInfo, ReplyDone, SpeechStarted
from twibridge.call.speaker import LOW_WATER_S, SEND_TIMEOUT_S, Speaker
from twibridge.server.app import make_runtime
from twibridge.twilio import protocol as tw

CHUNK_MS = 100
SID = "MZ" + "1" * 32


class StreamingAgent:
    """Speaks one 1 s reply in 20 ms pieces at real-time speed, like a streaming TTS."""

    name = "streaming-test"

    def __init__(self, piece_ms: int = 20, reply_ms: int = 1000) -> None:
        self.piece_ms, self.reply_ms = piece_ms, reply_ms

    async def speak(self, send: trio.MemorySendChannel[AgentEvent]) -> None:
        t0 = trio.current_time()
        for i in range(self.reply_ms // self.piece_ms):
            await trio.sleep_until(t0 + i * self.piece_ms / 1000)  # the agent's own pace
            await send.send(AudioOut("r1", b"\x10" * (8 * self.piece_ms)))
        await send.send(ReplyDone("r1"))

    async def connect(self, call: CallInfo, nursery: trio.Nursery) -> Any:
        send, recv = trio.open_memory_channel[AgentEvent](256)
        nursery.start_soon(self.speak, send)

        class Session:
            async def send_audio(self, ulaw: bytes) -> None: ...
            async def send_dtmf(self, digit: str) -> None: ...
            async def interrupt(self, item_id: str | None, heard_ms: int) -> None: ...
            async def mark_played(self, item_id: str, played_ms: int) -> None: ...
            async def receive(self) -> AgentEvent:
                return await recv.receive()
            async def aclose(self) -> None: ...

        return Session()


async def test_a_real_time_stream_goes_out_as_it_comes_with_a_mark_per_chunk() -> None:
    # Issue #16 changed this: a real-time stream used to be held back into
    # ~60 ms messages (80 ms of added latency); now each piece goes on at once
    # and only the marks are per chunk.
    cfg = make_config()
    rt = make_runtime(cfg)
    rt.provider_factory = lambda _cfg: StreamingAgent()  # type: ignore[assignment,return-value]
    with trio.fail_after(15):
        async with bridge(cfg, rt) as (url, _):
            async with media_socket(url) as ws:
                leg = Leg(ws, 31)
                await leg.start()
                await leg.media(silence(20))
                await leg.collect(idle_s=1)  # until quiet: the last mark follows the last audio
                await leg.stop()
    sizes = [len(e.payload) for e in leg.received if isinstance(e, tw.OutMedia)]
    marks = [e.name for e in leg.received if isinstance(e, tw.OutMark)]
    assert sum(sizes) == 8000  # all of it, nothing lost
    assert max(sizes) <= 8 * CHUNK_MS
    assert len(marks) <= 1000 // CHUNK_MS + 1 < len(sizes)  # not a mark per message
    assert marks[-1].endswith(":1000")  # the reply's end is marked


class InterruptedAgent(StreamingAgent):
    """Speaks a 3 s reply in 100 ms deltas, then hears the caller: ``SpeechStarted``."""

    def __init__(self, cut_after_s: float) -> None:
        super().__init__(piece_ms=100, reply_ms=3000)
        self.cut_after_s = cut_after_s

    async def speak(self, send: trio.MemorySendChannel[AgentEvent]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(super().speak, send.clone())
            await trio.sleep(self.cut_after_s)
            await send.send(SpeechStarted())


async def test_fifty_calls_each_get_the_clear_of_their_barge_in(captured_logs: Any) -> None:
    """Issue #23 item 5 through real sockets: every ``call.barge_in`` has its ``clear`` on the wire."""
    cfg = make_config(turns={"barge_in": "provider"})
    rt = make_runtime(cfg)
    cuts = iter(range(50))
    rt.provider_factory = lambda _cfg: InterruptedAgent(0.3 + next(cuts) * 0.0071)  # type: ignore[assignment,return-value]
    clears: dict[str, int] = {}

    async def one_call(n: int, url: str) -> None:
        async with media_socket(url) as ws:
            leg = Leg(ws, 100 + n)
            await leg.start()
            await leg.media(silence(20))
            # until the clear, or the reply is over (it is 3 s long: quiet for 1 s means over)
            while not any(isinstance(e, tw.OutClear) for e in leg.received):
                before = len(leg.received)
                await leg.collect(idle_s=1.0)
                if len(leg.received) == before:
                    break
            await leg.collect(idle_s=0.3)  # a second clear would show here
            clears[leg.call_sid] = sum(isinstance(e, tw.OutClear) for e in leg.received)
            await leg.stop()

    with trio.fail_after(90):
        async with bridge(cfg, rt) as (url, _):
            async with trio.open_nursery() as nursery:
                for n in range(50):
                    nursery.start_soon(one_call, n, url)
    barged = {e["call_sid"] for e in captured_logs.events("call.barge_in")}
    assert len(barged) == len(captured_logs.events("call.barge_in")) > 0
    # (on a quiet machine all 50 barge in; a heavily loaded one may start a reply after its cut)
    assert {sid: n for sid, n in clears.items() if n} == {sid: 1 for sid in barged}


# --------------------------------------------------------------------------- the model


class FakeTwilio:
    """Twilio's side of one stream, on the test's clock."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.speaker: Speaker | None = None
        self.log: list[tuple[float, tw.BridgeEvent]] = []
        self.play_end = 0.0
        self.queued_ms = 0.0  # all media received since the last clear, in ms
        self.gaps_ms: list[float] = []
        self.generation = 0
        self._cleared = trio.Event()

    async def send(self, message: str) -> None:
        await trio.lowlevel.checkpoint()  # a real socket may switch tasks here
        self.receive(message)

    def receive(self, message: str) -> None:
        now = trio.current_time()
        ev = _parse(message)
        self.log.append((now, ev))
        if isinstance(ev, tw.OutMedia):
            if self.queued_ms and now > self.play_end + 1e-9:
                self.gaps_ms.append((now - self.play_end) * 1000)
            self.play_end = max(now, self.play_end) + len(ev.payload) / 8000
            self.queued_ms += len(ev.payload) / 8
        elif isinstance(ev, tw.OutMark):
            self.nursery.start_soon(self._echo, ev.name, self.play_end, self._cleared)
        else:
            self.played_at_clear = self.played_ms(now)
            self._cleared.set()
            self._cleared = trio.Event()
            self.play_end, self.queued_ms = now, 0.0

    def played_ms(self, now: float) -> float:
        """What the caller has heard of the audio received since the last clear."""
        return self.queued_ms - max(0.0, self.play_end - now) * 1000

    async def _echo(self, name: str, at: float, cleared: trio.Event) -> None:
        with trio.move_on_at(at):
            await cleared.wait()  # a clear echoes pending marks at once
        assert self.speaker is not None
        self.speaker.playout.on_mark(name, trio.current_time())

    def media(self) -> list[tuple[float, bytes]]:
        return [(t, e.payload) for t, e in self.log if isinstance(e, tw.OutMedia)]

    def marks(self) -> list[int]:
        return [int(e.name.rsplit(":", 1)[1]) for _, e in self.log if isinstance(e, tw.OutMark)]


def _parse(message: str) -> tw.BridgeEvent:
    d = json.loads(message)
    if d["event"] == "media":
        return tw.OutMedia(d["streamSid"], base64.b64decode(d["media"]["payload"]))
    if d["event"] == "mark":
        return tw.OutMark(d["streamSid"], d["mark"]["name"])
    return tw.OutClear(d["streamSid"])


def new_speaker(twilio: FakeTwilio, **turns: Any) -> Speaker:
    speaker = Speaker(make_config(turns={"chunk_ms": CHUNK_MS, **turns}).turns, twilio.send, trio.Lock())
    speaker.stream_sid = SID
    twilio.speaker = speaker
    return speaker


def piece(i: int, ms: int) -> bytes:
    """``ms`` of audio whose bytes say where they belong (order and loss show)."""
    return bytes((i * 7 + k) % 251 for k in range(8 * ms))


async def speak(speaker: Speaker, pieces: list[tuple[float, bytes]], item: str = "r1") -> None:
    """The agent: each piece at its (absolute) time, then the reply's end."""
    for at, audio in pieces:
        await trio.sleep_until(at)
        speaker.on_audio(AudioOut(item, audio))
    speaker.on_reply_done(ReplyDone(item))


def real_time(t0: float, ms: int, piece_ms: int = 20) -> list[tuple[float, bytes]]:
    return [(t0 + i * piece_ms / 1000, piece(i, piece_ms)) for i in range(ms // piece_ms)]


def bursty(t0: float, ms: int, piece_ms: int = 20, speed: float = 2.0) -> list[tuple[float, bytes]]:
    """Faster than real time (``speed``×), in pieces, like OpenAI's deltas."""
    return [(t0 + i * piece_ms / 1000 / speed, piece(i, piece_ms)) for i in range(ms // piece_ms)]


AGENTS = {
    "real-time 20 ms": lambda t0: real_time(t0, 2000),
    "real-time 60 ms": lambda t0: real_time(t0, 1980, 60),
    "bursty 2x": lambda t0: bursty(t0, 2000),
    "one big delta": lambda t0: [(t0, piece(0, 3000))],
}


async def play(agent: list[tuple[float, bytes]], **turns: Any) -> tuple[FakeTwilio, Speaker]:
    async with trio.open_nursery() as nursery:
        twilio = FakeTwilio(nursery)
        speaker = new_speaker(twilio, **turns)
        nursery.start_soon(speaker.run)
        await speak(speaker, agent)
        with trio.fail_after(60):
            while not speaker.idle(trio.current_time()):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    return twilio, speaker


# --------------------------------------------------------------------------- cutting


@pytest.mark.parametrize("name", AGENTS)
async def test_first_audio_of_a_reply_goes_out_at_once(name: str, autojump_clock: Any) -> None:
    agent = AGENTS[name](5.0)
    twilio, _ = await play(agent)
    first_at, first = twilio.media()[0]
    assert first_at == agent[0][0]  # the same instant: no wait for a full message
    assert first == agent[0][1][: 8 * CHUNK_MS]


@pytest.mark.parametrize("name", AGENTS)
async def test_every_reply_plays_whole_in_order_without_a_gap(name: str, autojump_clock: Any) -> None:
    agent = AGENTS[name](5.0)
    twilio, speaker = await play(agent)
    media = twilio.media()
    assert b"".join(a for _, a in media) == b"".join(a for _, a in agent)  # nothing lost, nothing reordered
    assert twilio.gaps_ms == []  # playback never ran dry
    assert max(len(a) for _, a in media) <= 8 * CHUNK_MS  # chunk_ms is the largest message
    assert all(t >= 5.0 for t, _ in media)
    # audio waits only while Twilio has more than the low-water mark queued
    offset, starts = 0, []
    for at, audio in agent:
        starts.append((offset, at))
        offset += len(audio)
    offset = 0
    for i, (t, audio) in enumerate(media):
        arrived = max(at for start, at in starts if start <= offset)  # the message's oldest byte
        assert t <= max(arrived, twilio_play_end_before(media, i) - LOW_WATER_S) + 1e-9
        offset += len(audio)
    assert speaker.stats.audio_out_ms == sum(len(a) for _, a in agent) // 8


async def test_a_real_time_agent_is_sent_on_as_it_speaks(autojump_clock: Any) -> None:
    agent = real_time(5.0, 2000)
    twilio, speaker = await play(agent)
    # each 20 ms piece leaves the instant it arrives: no lead to coalesce into
    assert [t for t, _ in twilio.media()] == [t for t, _ in agent]
    # but the marks are per chunk, not per message
    assert twilio.marks() == list(range(CHUNK_MS, 2001, CHUNK_MS))
    assert speaker.stats.messages_out == len(agent) + len(twilio.marks())


async def test_audio_ahead_of_real_time_is_joined_while_twilio_has_enough_queued(autojump_clock: Any) -> None:
    agent = bursty(5.0, 4000)
    twilio, _ = await play(agent)
    media = twilio.media()
    sizes = [len(a) // 8 for _, a in media]
    assert len(media) < len(agent) / 3  # 200 pieces, far fewer messages
    # pieces go on as they come until a lead has built (the first ~200 ms), then full messages
    ramp = next(i for i, (t, _) in enumerate(media) if t >= 5.2)
    assert ramp <= 10 and set(sizes[ramp:-1]) == {CHUNK_MS}
    assert twilio.gaps_ms == []
    # no message waits once Twilio is down to the low-water mark
    lead_at_send = [twilio_play_end_before(media, i) - t for i, (t, _) in enumerate(media)]
    assert min(lead_at_send[1:]) >= 0


def twilio_play_end_before(media: list[tuple[float, bytes]], i: int) -> float:
    end = 0.0
    for t, a in media[:i]:
        end = max(end, t) + len(a) / 8000
    return end


async def test_pacing_keeps_the_lead_bounded(autojump_clock: Any) -> None:
    agent = [(5.0, piece(0, 3000))]
    twilio, _ = await play(agent, outbound_lead_ms=200)
    media = twilio.media()
    for i, (t, _) in enumerate(media):
        assert twilio_play_end_before(media, i) - t <= 0.2 + 1e-9


# --------------------------------------------------------------------------- marks, heard position


@pytest.mark.parametrize("name", AGENTS)
@pytest.mark.parametrize("cut_ms", [130, 370, 555, 990])
async def test_heard_position_is_known_to_within_one_chunk(name: str, cut_ms: int, autojump_clock: Any) -> None:
    agent = AGENTS[name](5.0)
    async with trio.open_nursery() as nursery:
        twilio = FakeTwilio(nursery)
        speaker = new_speaker(twilio)
        nursery.start_soon(speaker.run)
        nursery.start_soon(speak, speaker, agent)
        await trio.sleep_until(5.0 + cut_ms / 1000)
        tp = speaker.playout.turns[1]
        truth = twilio.played_ms(trio.current_time())
        assert 0 <= truth - tp.played_ms <= CHUNK_MS  # the marks alone are within a chunk
        cut = await speaker.barge_in("test", trio.current_time())
        assert cut is not None
        assert abs(cut.heard_ms - twilio.played_at_clear) <= 1  # marks + the clock: what played
        assert cut.heard_ms <= cut.sent_ms
        nursery.cancel_scope.cancel()
    marks = twilio.marks()
    assert all(b - a <= CHUNK_MS for a, b in zip([0, *marks], marks))


# --------------------------------------------------------------------------- whole sends


class EncodingSocket(FakeTwilio):
    """A socket that encodes a message, then waits for the wire, like wsproto under
    Hypercorn or trio-websocket: a cancel in the wait loses an encoded message."""

    def __init__(self, nursery: trio.Nursery) -> None:
        super().__init__(nursery)
        self.encoded: list[str] = []

    async def send(self, message: str) -> None:
        self.encoded.append(message)  # the connection's state has moved on (deflate contexts)
        await trio.sleep(0.003)  # waiting for the socket's lock / the wire
        self.receive(message)


async def test_fifty_barge_ins_mid_send_each_get_their_clear_and_lose_nothing(autojump_clock: Any) -> None:
    sockets: list[EncodingSocket] = []
    cuts = []

    async def one_call(n: int, nursery: trio.Nursery) -> None:
        sock = EncodingSocket(nursery)
        sockets.append(sock)
        speaker = new_speaker(sock)
        nursery.start_soon(speaker.run)
        nursery.start_soon(speak, speaker, real_time(5.0, 2000) if n % 2 else [(5.0, piece(0, 3000))])
        await trio.sleep_until(5.0 + 0.1 + n * 0.0173)  # spread over the sends' waits
        cuts.append(await speaker.barge_in("provider", trio.current_time()))

    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as calls:
            for n in range(50):
                calls.start_soon(one_call, n, nursery)
        nursery.cancel_scope.cancel()
    assert len(cuts) == 50 and all(cut is not None for cut in cuts)
    for sock in sockets:
        assert len(sock.log) == len(sock.encoded), "a message was encoded, then dropped by a cancel"
        kinds = [type(e) for _, e in sock.log]
        assert kinds.count(tw.OutClear) == 1
        assert kinds[-1] is tw.OutClear  # nothing of the cut turn after it
        assert kinds[0] is tw.OutMedia  # something was said before the cut


async def test_a_socket_that_takes_no_data_ends_the_call_after_a_bound(autojump_clock: Any) -> None:
    async def stuck(message: str) -> None:
        await trio.sleep_forever()

    speaker = Speaker(make_config().turns, stuck, trio.Lock())
    speaker.on_audio(AudioOut("r1", piece(0, 100)))
    t0 = trio.current_time()
    with pytest.raises(tw.RemoteProtocolError, match="took no data"):
        await speaker.run()
    assert trio.current_time() - t0 == pytest.approx(SEND_TIMEOUT_S)
