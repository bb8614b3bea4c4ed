"""Hypothesis against the real server over real sockets, with a healthy call beside the garbage.

The server (and one healthy echo call, round after round) runs in its own
Trio loop in a thread; each Hypothesis example is one hostile connection
made from the test's thread with a raw WebSocket client (``rawws``), so
Hypothesis can shrink a failure to the smallest frame sequence.  Frames:
valid events, valid JSON with wrong types / missing or extra fields, shuffled
event order, giant strings, bad base64, random JSON and text, binary frames,
text frames that are not UTF-8, deep nesting, fragmented messages.

Every example: the server ends the connection (or answers our close) within
a bound, never with 1011 (our bug), and ``/healthz`` still answers.
Afterwards: the healthy call heard every echo (correlation), every call that
started logged one ``call.ended`` with a reason, every policy close (1008)
has its ``call.bad_peer_data`` reason, and nothing is left live.
"""

from __future__ import annotations

import base64
import itertools
import json
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawws import BINARY, TEXT, SyncClient, encode_frame
from support import (
    ACCOUNT_SID, TOKEN, Leg, correlation, frames, make_config, media_socket, sid, silence, tone, wait_calls,
)
from twibridge.audio.g711 import ulaw_dbfs
from twibridge.config import Config
from twibridge.server.app import make_runtime, running_server
from twibridge.runtime import Runtime
from twibridge.twilio import stream_token

#: Close codes a hostile connection may see: normal, protocol error (wsproto),
#: not UTF-8, policy (our RemoteProtocolError), too big; None: hypercorn drops the
#: TCP connection with no close frame on a WebSocket-level violation (e.g. a text
#: frame that is not UTF-8: wsproto reports 1007, hypercorn just closes).  Never 1011.
ALLOWED = {None, 1000, 1002, 1007, 1008, 1009}
long_variant = pytest.mark.skipif("'slow' not in config.getoption('markexpr')",
                                  reason="long variant: run with -m slow")

# ----------------------------------------------------------------- strategies

CALL, STREAM, STREAM_TOKEN = "$CALL", "$STREAM", "$TOKEN"  # replaced per connection: see fill()
PAYLOAD = base64.b64encode(bytes(range(160))).decode()


def valid_events() -> list[dict[str, Any]]:
    return [
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        {"event": "start", "sequenceNumber": "1", "streamSid": STREAM,
         "start": {"accountSid": ACCOUNT_SID, "streamSid": STREAM, "callSid": CALL, "tracks": ["inbound"],
                   "customParameters": {"CallSid": CALL, stream_token.PARAMETER: STREAM_TOKEN},
                   "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}},
        {"event": "media", "sequenceNumber": "2", "streamSid": STREAM,
         "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": PAYLOAD}},
        {"event": "mark", "sequenceNumber": "3", "streamSid": STREAM, "mark": {"name": "g0:1"}},
        {"event": "dtmf", "sequenceNumber": "4", "streamSid": STREAM, "dtmf": {"track": "inbound_track", "digit": "5"}},
        {"event": "stop", "sequenceNumber": "5", "streamSid": STREAM,
         "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL}},
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)
#: Giant strings stay under ``[server] max_message_bytes`` (65 536) even three to a message:
#: bigger messages are pinned by the two test_*message*_ends_the_call_at_once tests below.
giant = st.integers(1_000, 20_000).map(lambda n: "x" * n)


def _paths(obj: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))


def _set(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    if value is _DELETE:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


_DELETE = object()


@st.composite
def mutated_event(draw: st.DrawFn) -> str:
    """A valid event with one to three fields broken: wrong type, gone, giant, bad base64, extra."""
    ev = json.loads(json.dumps(draw(st.sampled_from(valid_events()))))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(ev))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        value = draw(st.one_of(
            json_values, st.just(_DELETE), giant,
            st.sampled_from(["%%%notbase64", "AAA", base64.b64encode(b"\xff" * 159).decode(), "", "-1",
                             "99999999999999999999", "1e3", " 7", "٣"]),
        ))
        _set(ev, path, value)
    if draw(st.booleans()):
        ev[draw(st.text(max_size=8))] = draw(json_values)
    return json.dumps(ev)


class Wire:
    """One element to send, with a short repr: Hypothesis prints failing examples, and giants are 70 kB."""

    def __init__(self, kind: str, data: str | bytes) -> None:
        self.kind = kind  # "text" | "raw" (bytes in a text frame) | "binary" | "fragmented"
        self.data = data

    def __repr__(self) -> str:
        if len(self.data) <= 120:
            return f"Wire({self.kind!r}, {self.data!r})"
        return f"Wire({self.kind!r}, {self.data[:100]!r}…+{len(self.data) - 100})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # Hypothesis's pretty-printer
        printer.text(repr(self))


valid_text = st.sampled_from(valid_events()).map(json.dumps)
invalid_utf8 = st.tuples(valid_text, st.integers(0, 200), st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80",
                                                                          b"\xf8\x88\x80\x80\x80", b"\x80"])
                         ).map(lambda t: t[0].encode()[:t[1]] + t[2] + t[0].encode()[t[1]:])
element = st.one_of(
    valid_text.map(lambda s: Wire("text", s)),
    mutated_event().map(lambda s: Wire("text", s)),
    mutated_event().map(lambda s: Wire("text", s)),
    json_values.map(lambda v: Wire("text", json.dumps(v))),
    st.text(max_size=200).map(lambda s: Wire("text", s)),
    st.integers(1_000, 65_000).map(lambda n: Wire("text", json.dumps({"event": "media", "streamSid": "x" * n}))),
    st.binary(max_size=300).map(lambda b: Wire("binary", b)),
    invalid_utf8.map(lambda b: Wire("raw", b)),
    st.integers(100, 32_000).map(lambda n: Wire("text", "[" * n + "]" * n)),
    mutated_event().map(lambda s: Wire("fragmented", s)),
)
PREFIXES = {"none": [], "connected": [0], "start": [0, 1]}
connection = st.one_of(
    st.tuples(st.sampled_from(sorted(PREFIXES)), st.lists(element, min_size=1, max_size=8)),
    st.permutations([json.dumps(e) for e in valid_events()] + [json.dumps(valid_events()[2])] * 2).map(
        lambda evs: ("none", [Wire("text", e) for e in evs])),
)

# ----------------------------------------------------------------- the server in a thread


def after_quiet(heard: bytes) -> bytes:
    """The echo may open with a little of the quiet before the utterance (the agent's pre-roll)."""
    lead = next((i for i in range(0, len(heard), 160) if ulaw_dbfs(heard[i:i + 160]) > -40), len(heard))
    return heard[lead:]


@dataclass
class Round:
    sent_ms: int
    heard_ms: int
    correlation: float


@dataclass
class ThreadedBridge:
    """The real server and one healthy call, in a Trio loop of their own."""

    config: Config
    rt: Runtime = field(init=False)
    url: str = ""
    rounds: list[Round] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.rt = make_runtime(self.config)
        self._started: queue.Queue[str | BaseException] = queue.Queue(maxsize=1)
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._stop_calls = False
        self._thread = threading.Thread(target=self._run, name="fuzz-server", daemon=True)

    def __enter__(self) -> ThreadedBridge:
        self._thread.start()
        started = self._started.get(timeout=20)
        if isinstance(started, BaseException):
            raise started
        self.url = started
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None and self._stop is not None
        try:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        except trio.RunFinishedError:
            pass  # the loop already ended: self.error says why
        self._thread.join(60)
        assert not self._thread.is_alive(), "the server thread did not stop"
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported by __exit__ (or __enter__)
            self.error = exc
            if self._started.empty():
                self._started.put(exc)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with running_server(self.config, rt=self.rt) as url:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._healthy_call, url)
                self._started.put(url)
                await self._stop.wait()
                self._stop_calls = True

    async def _healthy_call(self, url: str) -> None:
        """Utterance, quiet, its echo; again, until told to stop (the round in flight finishes)."""
        async with media_socket(url) as ws:
            leg = Leg(ws, 0xFEED)
            await leg.start()
            for n in itertools.count():
                if self._stop_calls and n >= 2:
                    break
                utterance = tone(500, 300 + 40 * (n % 10))
                leg.audio.clear()
                with trio.fail_after(60):
                    for f in frames(utterance + silence(700)):
                        await leg.media(f)
                    # until the whole echo is in (however late a loaded loop plays it) …
                    while len(after_quiet(bytes(leg.audio))) < len(utterance) - 320:
                        before = len(leg.audio)
                        # generous: the fuzzer shares this process's GIL and a loaded CI VM
                        await leg.collect(until_ms_of_audio=before // 8 + 20, idle_s=15)
                        if len(leg.audio) == before:
                            break  # nothing more came: the assertion below says what was missing
                    await leg.collect(idle_s=1.0)  # … and its quiet tail, so the next round starts clean
                heard = after_quiet(bytes(leg.audio))
                self.rounds.append(Round(len(utterance) // 8, len(heard) // 8, correlation(utterance, heard)))
            await leg.stop()


# ----------------------------------------------------------------- the test


@dataclass
class Tally:
    connections: int = 0
    frames: int = 0
    codes: dict[int | None, int] = field(default_factory=dict)
    started: dict[str, int | None] = field(default_factory=dict)  # CallSid → server close code
    policy_closes: int = 0


_sids = itertools.count(1)


def fill(raw: bytes, call_sid: str, stream_sid: str) -> bytes:
    """This connection's SIDs, and the stream token ``/voice`` would have minted, in place of the placeholders."""
    token = stream_token.issue(TOKEN, account_sid=ACCOUNT_SID, call_sid=call_sid, params={"CallSid": call_sid},
                               now=time.time())
    return (raw.replace(CALL.encode(), call_sid.encode()).replace(STREAM.encode(), stream_sid.encode())
            .replace(STREAM_TOKEN.encode(), token.encode()))


def encode(wire: Wire, call_sid: str, stream_sid: str) -> list[bytes]:
    """The frames for one element, with this connection's SIDs in place of the placeholders."""
    kind, data = wire.kind, wire.data
    if kind == "binary":
        assert isinstance(data, bytes)
        return [encode_frame(BINARY, data)]
    raw = fill(data if isinstance(data, bytes) else data.encode(), call_sid, stream_sid)
    if kind == "fragmented" and len(raw) > 1:
        cut = len(raw) // 2
        return [encode_frame(TEXT, raw[:cut], fin=False), encode_frame(0x0, raw[cut:])]
    return [encode_frame(TEXT, raw)]


def one_connection(url: str, example: tuple[str, list[Wire]], tally: Tally,
                   http: httpx.Client) -> None:
    prefix, items = example
    n = next(_sids)
    call_sid, stream_sid = sid("CA", n), sid("MZ", n)
    events = valid_events()
    elements = [Wire("text", json.dumps(events[i])) for i in PREFIXES[prefix]] + list(items)
    client = SyncClient(url)
    for wire in elements:
        if not all([client.send(f) for f in encode(wire, call_sid, stream_sid)]):
            break  # the server has closed: the rest would go nowhere
        tally.frames += 1
    ending = client.close(timeout=15)
    tally.connections += 1
    tally.codes[ending.server_code] = tally.codes.get(ending.server_code, 0) + 1
    if prefix == "start":
        tally.started[call_sid] = ending.server_code
    if ending.server_code == 1008:
        tally.policy_closes += 1
    assert ending.eof
    assert ending.server_code in ALLOWED, ending
    assert http.get("/healthz").json()["status"] == "ok"


def run_fuzz(examples: int, captured_logs: Any) -> Tally:
    cfg = make_config(calls={"idle_timeout_s": 30.0})
    tally = Tally()
    with ThreadedBridge(cfg) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        @settings(max_examples=examples, deadline=None, database=None, print_blob=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.large_base_example])
        @given(connection)
        def fuzz(example: tuple[str, list[Wire]]) -> None:
            one_connection(server.url, example, tally, http)

        fuzz()
        rt = server.rt
    # the healthy call: every round's echo heard, whole and recognisable
    assert len(server.rounds) >= 2, server.rounds
    bad = [r for r in server.rounds if r.correlation < 0.9 or r.heard_ms < r.sent_ms - 60]
    assert not bad, (bad, server.rounds)
    # nothing left live; every started call summarised once with a reason; policy closes explained
    assert rt.calls == {} and rt.pending == 0
    ended = captured_logs.events("call.ended")
    assert len(ended) == len(captured_logs.events("call.started"))
    assert all(e["outcome"] and e["reason"] for e in ended)
    assert len({e["call_sid"] for e in ended}) == len(ended)
    bad_peer = captured_logs.events("call.bad_peer_data")
    assert all(line["reason"] for line in bad_peer)
    assert len(bad_peer) >= tally.policy_closes
    assert captured_logs.events("call.internal_error") == []
    by_sid = {e["call_sid"]: e for e in ended}
    for call_sid, code in tally.started.items():
        if code == 1008 and call_sid in by_sid:
            assert by_sid[call_sid]["outcome"] == "protocol-error", by_sid[call_sid]
    return tally


def test_fuzzed_frames_never_hurt_the_daemon_or_the_healthy_call(captured_logs) -> None:
    """~1000 frames in ~200 hostile connections (the default suite's short variant)."""
    tally = run_fuzz(200, captured_logs)
    assert tally.connections >= 150 and tally.frames >= 800, tally
    assert len(tally.codes) >= 3, tally.codes  # the mix reached several different endings


@pytest.mark.slow
@long_variant
def test_fuzzed_frames_long_variant(captured_logs) -> None:
    """Thousands of connections, tens of thousands of frames."""
    tally = run_fuzz(4000, captured_logs)
    assert tally.frames >= 15_000, tally


async def test_empty_binary_frame_is_a_protocol_error(captured_logs) -> None:
    """An empty binary frame is still a binary frame: the peer's error, not ours (quart-trio's relay
    turned it into None, ``bytes or text``; twibridge.server.asgi passes it on as b"")."""
    from rawws import TrioClient
    from support import bridge

    async with bridge() as (url, _):
        client = await TrioClient.connect(url)
        try:
            await client.send(encode_frame(BINARY, b""))
            with trio.fail_after(5):
                ending = await client.read_until_closed()
        finally:
            await client.aclose()
    assert ending.server_code == 1008
    assert captured_logs.events("call.internal_error") == []


async def test_oversized_message_ends_the_call_at_once(captured_logs) -> None:
    from rawws import TrioClient
    from support import bridge

    async with bridge() as (url, rt):
        client = await TrioClient.connect(url)
        try:
            await client.text('{"event": "connected", "protocol": "Call", "version": "1.0.0"}')
            await client.send(encode_frame(TEXT, fill(json.dumps(valid_events()[1]).encode(), sid("CA", 1), sid("MZ", 1))))
            await client.text(json.dumps({"event": "media", "streamSid": "x" * 70_000}))
            with trio.move_on_after(2):  # a fixed server answers in milliseconds
                ending = await client.close()
        finally:
            await client.aclose()
        with trio.move_on_after(2):  # the call's teardown may finish just after the close handshake
            while rt.calls:
                await rt.calls_changed.wait()
        assert rt.calls == {}, "a ghost call: still live after its socket was refused a message"
    # 1008 when our close wins; 1000 when hypercorn first answers the client's own close frame
    assert ending.eof and ending.server_code in (1000, 1008, 1009)
    (ended,) = captured_logs.events("call.ended")
    assert "too large" in ended["reason"] or "too big" in ended["reason"]


async def test_message_over_the_websocket_layers_limit_ends_the_call_at_once(captured_logs) -> None:
    """Above twice ``max_message_bytes`` Hypercorn itself refuses the message (1009).

    The peer here never answers that close frame, so only the server can end
    the connection: before the guard in ``hypercorn_fix`` the call stayed live
    (counting against ``max_calls``) until its idle timeout.
    """
    from rawws import TrioClient
    from support import bridge

    async with bridge() as (url, rt):
        client = await TrioClient.connect(url)
        try:
            await client.text('{"event": "connected", "protocol": "Call", "version": "1.0.0"}')
            await client.send(encode_frame(TEXT, fill(json.dumps(valid_events()[1]).encode(), sid("CA", 1), sid("MZ", 1))))
            await wait_calls(rt, 1, timeout=5)
            limit = 2 * rt.config.server.max_message_bytes
            await client.text(json.dumps({"event": "media", "streamSid": "x" * (limit + 1000)}))
            client.closed_sent = True  # a peer that never answers the server's close frame
            with trio.fail_after(5):  # a fixed server answers in milliseconds; the idle timeout is 65 s
                ending = await client.read_until_closed()
                while rt.calls:
                    await rt.calls_changed.wait()
        finally:
            await client.aclose()
    assert ending.server_code == 1009 and ending.eof
    (ended,) = captured_logs.events("call.ended")
    assert ended["outcome"] == "protocol-error" and "too large" in ended["reason"]
    assert captured_logs.events("call.bad_peer_data")
    assert captured_logs.events("call.internal_error") == []
