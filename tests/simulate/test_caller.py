"""The simulated Twilio against a scripted fake bridge: wire details and misbehaviour.

The fake is a bare ASGI app under Hypercorn on 127.0.0.1 port 0, so each
test decides exactly what the "bridge" answers and sends, and sees exactly
what the simulator sent (signatures, sequence numbers, pacing, marks).
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl

import pytest
import trio
from twilio.request_validator import RequestValidator

from fakes.twilio_rest import lifespan, read_body, serve_asgi

from twibridge.simulate.caller import CallOptions, Outcome, simulate_call
from twibridge.simulate.report import REPORT_KEYS, build_report
from twibridge.twilio import protocol as tw

TOKEN = "fake-bridge-token-0123456789"
CONNECT = ('<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{ws}/media-stream">'
           '<Parameter name="token" value="t-123"/></Stream></Connect><Hangup/></Response>')

Script = Callable[["WsPeer"], Awaitable[None]]


class WsPeer:
    """The fake bridge's side of the socket, as seen by a test script."""

    def __init__(self, receive: Any, send: Any, bridge: FakeBridge) -> None:
        self._receive, self._send, self.bridge = receive, send, bridge
        self.stream_sid = ""

    async def recv(self) -> dict[str, Any] | None:
        """The next Twilio message (parsed), or None once the caller closed."""
        msg = await self._receive()
        if msg["type"] == "websocket.disconnect":
            return None
        data = json.loads(msg["text"])
        self.bridge.received.append((trio.current_time(), data))
        if data["event"] == "start":
            self.stream_sid = data["streamSid"]
        return dict(data)

    async def recv_until(self, event: str) -> dict[str, Any]:
        while (data := await self.recv()) is not None:
            if data["event"] == event:
                return data
        raise AssertionError(f"socket closed before {event}")

    async def send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

    async def close(self, code: int = 1000) -> None:
        await self._send({"type": "websocket.close", "code": code})

    async def drain(self) -> None:
        while await self.recv() is not None:
            pass


async def passive(peer: WsPeer) -> None:
    await peer.drain()


@dataclass
class FakeBridge:
    """A scripted bridge; it checks Twilio's signatures the way a real one must."""

    script: Script = passive
    twiml: str | None = None  # default: CONNECT for this server's address
    status: int = 200
    content_type: str = "text/xml"
    reject_upgrade: bool = False
    url: str = ""
    forms: list[dict[str, str]] = field(default_factory=list)
    voice_signature_ok: list[bool] = field(default_factory=list)
    ws_signature_ok: list[bool] = field(default_factory=list)
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        form = dict(parse_qsl((await read_body(receive)).decode()))
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if scope["path"] == "/voice":
            self.forms.append(form)
            ok = RequestValidator(TOKEN).validate(self.url + "/voice", form, headers.get("x-twilio-signature", ""))
            self.voice_signature_ok.append(ok)
        twiml = self.twiml if self.twiml is not None else CONNECT.format(ws=self.url.replace("http", "ws", 1))
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", self.content_type.encode())]})
        await send({"type": "http.response.body", "body": twiml.encode()})

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        ws_url = self.url.replace("http", "ws", 1) + scope["path"]
        self.ws_signature_ok.append(
            RequestValidator(TOKEN).validate(ws_url, {}, headers.get("x-twilio-signature", "")))
        if self.reject_upgrade:
            await send({"type": "websocket.close", "code": 1000})  # before accept: HTTP 403
            return
        await send({"type": "websocket.accept"})
        peer = WsPeer(receive, send, self)
        await self.script(peer)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [d for _, d in self.received if d["event"] == name]


@asynccontextmanager
async def serving(bridge: FakeBridge) -> AsyncIterator[str]:
    async with serve_asgi(bridge) as url:
        bridge.url = url
        yield url


def audio(ms: int) -> bytes:
    return bytes([0x20]) * (ms * 8)  # loud, non-silent μ-law


async def call(bridge: FakeBridge, ms: int = 200, **options: Any) -> Any:
    options.setdefault("tail_s", 0.1)
    options.setdefault("speed", 4.0)
    with trio.fail_after(20):
        async with serving(bridge) as url:
            return await simulate_call(url, TOKEN, audio(ms), CallOptions(**options))


async def test_a_call_on_the_wire_looks_like_twilio() -> None:
    bridge = FakeBridge()
    result = await call(bridge, ms=200, dtmf=[(0.05, "7")], from_number="+15551230000")
    assert result.outcome is Outcome.COMPLETED and result.ok, result.detail
    assert bridge.voice_signature_ok == [True] and bridge.ws_signature_ok == [True]
    form = bridge.forms[0]
    assert form["CallSid"] == result.call_sid and len(result.call_sid) == 34 and result.call_sid.startswith("CA")
    assert form["AccountSid"].startswith("AC") and len(form["AccountSid"]) == 34
    assert (form["From"], form["CallStatus"], form["Direction"], form["ApiVersion"]) == (
        "+15551230000", "ringing", "inbound", "2010-04-01")
    msgs = [d for _, d in bridge.received]
    assert [m["event"] for m in msgs[:2]] == ["connected", "start"] and msgs[-1]["event"] == "stop"
    assert "sequenceNumber" not in msgs[0]
    assert [m["sequenceNumber"] for m in msgs[1:]] == [str(n) for n in range(1, len(msgs))]
    start = msgs[1]["start"]
    assert start["customParameters"] == {"token": "t-123"} and start["callSid"] == result.call_sid
    assert msgs[1]["streamSid"].startswith("MZ") and len(msgs[1]["streamSid"]) == 34
    media = bridge.events("media")
    assert len(media) == 15  # 200 ms of audio + 100 ms of tail, 20 ms each
    assert [m["media"]["chunk"] for m in media] == [str(n) for n in range(1, 16)]
    assert [m["media"]["timestamp"] for m in media] == [str(20 * n) for n in range(15)]
    assert all(len(tw.parse_from_twilio(json.dumps(m)).payload) == 160 for m in media)  # type: ignore[union-attr]
    dtmf = bridge.events("dtmf")
    assert [d["dtmf"]["digit"] for d in dtmf] == ["7"]
    assert [m["event"] for m in msgs].index("dtmf") == 4  # after frames 1 and 2 (due at 20, 40 ms)


async def test_media_is_paced_against_absolute_deadlines() -> None:
    bridge = FakeBridge()
    result = await call(bridge, ms=1000, speed=5.0, tail_s=0.0)
    assert result.ok
    times = [t for t, d in bridge.received if d["event"] == "media"]
    assert len(times) == 50
    # 1 s of audio at 5x = 0.2 s; frame n leaves at (n + 1) * 4 ms after the first.
    span = times[-1] - times[0]
    assert 0.19 <= span <= 0.30
    expected = [times[0] + n * 0.004 for n in range(50)]
    assert max(abs(a - b) for a, b in zip(times, expected)) < 0.05  # no cumulative drift


async def test_marks_echo_after_their_audio_plays_and_clear_flushes_them() -> None:
    async def script(peer: WsPeer) -> None:
        await peer.recv_until("media")
        sid = peer.stream_sid
        await peer.send_text(tw.build_media(sid, bytes([0x20]) * 800))  # 100 ms
        await peer.send_text(tw.build_mark(sid, "first"))
        await peer.send_text(tw.build_media(sid, bytes([0x20]) * 8000))  # 1 s
        await peer.send_text(tw.build_mark(sid, "second"))
        first = await peer.recv_until("mark")
        assert first["mark"]["name"] == "first"
        await peer.send_text(tw.build_clear(sid))
        second = await peer.recv_until("mark")
        assert second["mark"]["name"] == "second"
        await peer.drain()

    bridge = FakeBridge(script)
    result = await call(bridge, ms=600, speed=2.0)
    assert result.ok, (result.detail, result.protocol_errors)
    assert (result.marks_received, result.marks_echoed, len(result.clears)) == (2, 2, 1)
    marks = [(t, d) for t, d in bridge.received if d["event"] == "mark"]
    media0 = next(t for t, d in bridge.received if d["event"] == "media")
    # "first" comes back once its 100 ms has played (50 ms of wall time at 2x), not at once.
    assert marks[0][0] - media0 >= 0.045
    rep = build_report(result)
    assert tuple(rep) == REPORT_KEYS
    assert 100 <= rep["audio_received_ms"] < 1100  # the clear dropped the unplayed rest


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (lambda p: p.send_bytes(b"\x00\x01"), "31950: binary frame"),
        (lambda p: p.send_text("{not json"), "31951: malformed JSON"),
        (lambda p: p.send_text(tw.build_clear("MZ" + "0" * 32)), "31951: wrong streamSid"),
        (lambda p: p.send_text(json.dumps({"event": "dance", "streamSid": p.stream_sid})), "31951: unsupported"),
    ],
    ids=["binary", "bad-json", "wrong-sid", "unknown-event"],
)
async def test_bad_frames_are_protocol_errors_and_the_call_goes_on(send: Any, expected: str) -> None:
    async def script(peer: WsPeer) -> None:
        await peer.recv_until("start")
        await send(peer)
        await peer.drain()

    result = await call(FakeBridge(script))
    assert result.outcome is Outcome.COMPLETED and not result.ok
    assert len(result.protocol_errors) == 1 and result.protocol_errors[0].startswith(expected)
    assert result.frames_sent == 15  # the call went on to the end


@pytest.mark.parametrize(("code", "outcome", "ok"), [(1000, Outcome.SERVER_CLOSED, True),
                                                      (1011, Outcome.ABNORMAL_CLOSE, False)])
async def test_server_closing_first_ends_the_call(code: int, outcome: Outcome, ok: bool) -> None:
    async def script(peer: WsPeer) -> None:
        await peer.recv_until("media")
        await peer.close(code)

    result = await call(FakeBridge(script), ms=2000)
    assert result.outcome is outcome and result.ok is ok
    assert result.frames_sent < 100
    events = [e["event"] for e in build_report(result)["events"]]
    assert "close" in events and events[-2:] == ["hangup", "end"]  # Twilio runs the verb after </Connect>


@pytest.mark.parametrize(
    ("bridge", "outcome", "detail"),
    [
        (FakeBridge(status=403), Outcome.REFUSED, "11200: POST"),
        (FakeBridge(content_type="text/plain"), Outcome.REFUSED, "11200: /voice answered Content-Type"),
        (FakeBridge(twiml="<Response><Play>x.mp3</Play></Response>"), Outcome.REFUSED, "TwiML refused: "
         "unsupported TwiML verb <Play>"),
        (FakeBridge(twiml="<Response><Say>Busy.</Say><Hangup/></Response>"), Outcome.NO_STREAM,
         "the server answered without <Connect><Stream>: <Say>, <Hangup>"),
        (FakeBridge(reject_upgrade=True), Outcome.REFUSED, "31920: websocket upgrade rejected with HTTP 403"),
    ],
    ids=["http-403", "not-xml", "unsupported-verb", "busy", "upgrade-rejected"],
)
async def test_refusals_end_the_call_with_a_clear_reason(bridge: FakeBridge, outcome: Outcome, detail: str) -> None:
    result = await call(bridge)
    assert result.outcome is outcome and not result.ok
    assert result.detail.startswith(detail), result.detail
    assert result.frames_sent == 0
    assert tuple(build_report(result)) == REPORT_KEYS


async def test_the_whole_call_is_bounded_by_the_timeout() -> None:
    result = await call(FakeBridge(), ms=60_000, speed=1.0, timeout_s=0.3)
    assert result.outcome is Outcome.TIMEOUT and not result.ok
    assert 0 < result.frames_sent < 30
    assert build_report(result)["events"][-1]["outcome"] == "timeout"


# -- an untrusted --server (issue #23, item 12) ---------------------------------------------------

FOREIGN_STREAM = ('<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
                  '<Stream url="wss://bridge.example.com/media-stream"/></Connect></Response>')
FOREIGN_CALLBACK = ('<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{ws}/media-stream" '
                    'statusCallback="https://bridge.example.com/stream-status"/></Connect></Response>')


@pytest.mark.parametrize("twiml", [FOREIGN_STREAM, FOREIGN_CALLBACK], ids=["stream", "status-callback"])
async def test_a_server_naming_another_origin_gets_no_signature_for_it(twiml: str) -> None:
    """A server asking us to sign a production URL (one upgrade signature per deployment) is refused."""
    bridge = FakeBridge()
    async with serving(bridge) as url:
        bridge.twiml = twiml.format(ws=url.replace("http", "ws", 1))
        with trio.fail_after(20):
            result = await simulate_call(url, TOKEN, audio(200), CallOptions(tail_s=0.1, speed=4.0))
    assert result.outcome is Outcome.REFUSED and not result.ok
    assert result.detail.startswith("refusing to sign https://bridge.example.com/stream-status"
                                    if "statusCallback" in twiml else
                                    "refusing to sign wss://bridge.example.com/media-stream"), result.detail
    assert bridge.ws_signature_ok == [] and result.frames_sent == 0  # no upgrade, nothing signed


async def test_a_signed_public_url_webhook_is_never_posted_to_another_non_loopback_server() -> None:
    """public_url set: the /voice signed for production goes only to loopback or production itself."""
    opts = CallOptions(webhook_url="https://bridge.example.com/voice")
    with trio.fail_after(5):  # refused before any connection: 192.0.2.1 (TEST-NET) is never contacted
        result = await simulate_call("http://192.0.2.1:8080", TOKEN, audio(100), opts)
    assert result.outcome is Outcome.REFUSED
    assert result.detail.startswith("refusing to sign https://bridge.example.com/voice"), result.detail


async def test_the_cli_exits_1_for_a_server_asking_for_a_foreign_signature(tmp_path: Any) -> None:
    import sys
    from pathlib import Path

    wav = Path(__file__).parents[1] / "fixtures" / "audio" / "hello_22k_pcm16.wav"
    bridge = FakeBridge(twiml=FOREIGN_STREAM)
    env = {"PATH": "/usr/bin:/bin", "TWIBRIDGE_TWILIO_AUTH_TOKEN": TOKEN}
    async with serving(bridge) as url:
        with trio.fail_after(30):
            done = await trio.run_process([sys.executable, "-m", "twibridge", "simulate-call", str(wav),
                                           "--server", url, "--quiet"], env=env, capture_stdout=True,
                                          capture_stderr=True, check=False)
    assert done.returncode == 1 and b"refusing to sign wss://bridge.example.com/media-stream" in done.stderr
    assert bridge.ws_signature_ok == []
