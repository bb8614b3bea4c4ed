"""The real app under Hypercorn on 127.0.0.1:0 with real WebSocket clients."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET

import pytest
import trio
import trio_websocket

from support import (
    TOKEN, Leg, bridge, correlation, frames, make_config, media_socket, post_signed, sid, silence, tone,
    wait_calls,
)
from twibridge.twilio import emulation as emu
from twibridge.twilio import protocol as tw
from twibridge.twilio import stream_token

VOICE_FORM = {"CallSid": sid("CA", 7), "AccountSid": "AC" + "0" * 32, "From": "+15005550006",
              "To": "+15005550001", "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}


def children(el: ET.Element) -> list[str]:
    return [c.tag for c in el]


async def test_signed_webhook_answers_connect_stream_then_hangup() -> None:
    async with bridge() as (url, _):
        resp = await post_signed(url, "/voice", VOICE_FORM)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(resp.text)
    assert children(root) == ["Connect", "Hangup"]
    stream = root.find("Connect/Stream")
    assert stream is not None
    host = url.removeprefix("http://")
    assert stream.get("url") == f"ws://{host}/media-stream"  # no query string, ever
    assert stream.get("statusCallback") == f"{url}/stream-status"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    token = params.pop(stream_token.PARAMETER)
    assert params == {"CallSid": VOICE_FORM["CallSid"], "From": "+15005550006", "To": "+15005550001"}
    # minted for this call (its account, CallSid and every parameter), now
    stream_token.check(TOKEN, token, account_sid=VOICE_FORM["AccountSid"], call_sid=VOICE_FORM["CallSid"],
                       params=params, now=time.time(), ttl_s=60)


async def test_public_url_builds_wss_stream_and_is_what_is_signed() -> None:
    cfg = make_config(server={"public_url": "https://bridge.example.com"})
    async with bridge(cfg) as (url, _):
        ok = await post_signed(url, "/voice", VOICE_FORM, signed_as="https://bridge.example.com/voice")
        wrong = await post_signed(url, "/voice", VOICE_FORM)  # signed for the internal URL
    assert ok.status_code == 200 and wrong.status_code == 403
    stream = ET.fromstring(ok.text).find("Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://bridge.example.com/media-stream"
    assert stream.get("statusCallback") == "https://bridge.example.com/stream-status"


@pytest.mark.parametrize("signature", ["", "bm90LWEtc2lnbmF0dXJl"])
async def test_unsigned_or_wrongly_signed_webhooks_are_refused(signature: str, captured_logs) -> None:
    async with bridge() as (url, _):
        voice = await post_signed(url, "/voice", VOICE_FORM, signature=signature)
        status = await post_signed(url, "/stream-status", {"CallSid": "CA1", "StreamEvent": "stream-started"},
                                   signature=signature)
        other_token = await post_signed(url, "/voice", VOICE_FORM, token="another-token-entirely")
    assert (voice.status_code, status.status_code, other_token.status_code) == (403, 403, 403)
    warnings = captured_logs.events("http.bad_signature")
    assert len(warnings) == 3 and all(w["remote"] == "127.0.0.1" for w in warnings)


async def test_stream_status_callback_is_logged(captured_logs) -> None:
    async with bridge() as (url, _):
        resp = await post_signed(url, "/stream-status", {"CallSid": "CA1", "StreamSid": "MZ1",
                                                          "StreamEvent": "stream-started"})
    assert resp.status_code == 204
    assert captured_logs.events("stream.status")[0]["stream_event"] == "stream-started"


@pytest.mark.parametrize("signature", ["", "bm90LWEtc2lnbmF0dXJl"])
async def test_unsigned_upgrade_gets_403_and_no_call(signature: str, captured_logs) -> None:
    async with bridge() as (url, rt):
        with pytest.raises(trio_websocket.ConnectionRejected) as exc:
            async with media_socket(url, signature=signature):
                pass  # pragma: no cover
        assert exc.value.status_code == 403 and rt.active == 0
    assert captured_logs.events("ws.bad_signature")[0]["remote"] == "127.0.0.1"


async def test_healthz_counts_calls() -> None:
    import httpx

    from twibridge import __version__

    async with bridge() as (url, rt):
        async with httpx.AsyncClient() as client:
            assert (await client.get(url + "/healthz")).json() == {"status": "ok", "calls": 0, "version": __version__}
            async with media_socket(url) as ws:
                leg = Leg(ws)
                await leg.start()
                await wait_calls(rt, 1, timeout=5)
                assert (await client.get(url + "/healthz")).json() == {"status": "ok", "calls": 1,
                                                                      "version": __version__}


async def run_echo_call(url: str, n: int, utterance: bytes) -> Leg:
    """Send one utterance and 700 ms of quiet; collect the echo."""
    async with media_socket(url) as ws:
        leg = Leg(ws, n)
        await leg.start()
        for f in frames(utterance + silence(700)):
            await leg.media(f)
        await leg.collect(until_ms_of_audio=len(utterance) // 8 - 100, idle_s=3)
        await leg.stop()
    return leg


async def test_echo_agent_repeats_the_caller() -> None:
    utterance = tone(800, 440)
    async with bridge() as (url, rt):
        with trio.fail_after(15):
            leg = await run_echo_call(url, 1, utterance)
            while rt.calls:
                await rt.calls_changed.wait()
    assert len(leg.audio) >= len(utterance) - 800
    assert correlation(utterance, bytes(leg.audio)) > 0.9
    kinds = [type(e).__name__ for e in leg.received]
    assert kinds[:2] == ["OutMedia", "OutMark"]  # every chunk followed by its mark
    sizes = {len(e.payload) for e in leg.received if isinstance(e, tw.OutMedia)}
    assert max(sizes) == 800  # 100 ms chunks, not 20 ms frames


BAD_INPUTS = {
    "malformed-json": ["{not json"],
    "binary-frame": [b"\x00\x01"],
    "media-before-start": ["MEDIA_FIRST"],
    "bad-base64": ["BAD_B64"],
    "short-payload": ["SHORT"],
    "oversized": ["x" * 70_000],
    "start-twice": ["START", "START"],
}


async def send_bad(ws: trio_websocket.WebSocketConnection, n: int, items: list) -> None:
    leg = Leg(ws, n)
    for item in items:
        if item == "MEDIA_FIRST":
            await ws.send_message(emu.build_inbound_media(1, leg.stream_sid, 1, 0, silence(20)))
        elif item == "START":
            await leg.start()
        elif item in ("BAD_B64", "SHORT"):
            await leg.start()
            text = emu.build_inbound_media(9, leg.stream_sid, 1, 0, silence(20 if item == "BAD_B64" else 10))
            if item == "BAD_B64":
                text = text.replace('"payload":"', '"payload":"%%%')
            await ws.send_message(text)
        else:
            await ws.send_message(item)


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
async def test_bad_input_ends_only_that_call(kind: str, captured_logs) -> None:
    utterance = tone(600, 330)
    async with bridge() as (url, rt):
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                results: dict[str, Leg] = {}

                async def healthy() -> None:
                    results["healthy"] = await run_echo_call(url, 100, utterance)

                nursery.start_soon(healthy)
                async with media_socket(url) as ws:
                    await send_bad(ws, 200, BAD_INPUTS[kind])
                    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                        while True:
                            await ws.get_message()
                code = closed.value.reason.code
                assert code in (1008, 1009), code  # policy / too big, never a crash
        assert correlation(utterance, bytes(results["healthy"].audio)) > 0.9
        assert rt.active == 0
    assert captured_logs.events("call.internal_error") == []
    if code == 1008:
        assert captured_logs.events("call.bad_peer_data")


async def test_unknown_event_is_logged_and_ignored(captured_logs) -> None:
    utterance = tone(600, 330)
    async with bridge() as (url, _):
        async with media_socket(url) as ws:
            leg = Leg(ws, 3)
            await leg.start()
            await ws.send_message(json.dumps({"event": "brand-new", "streamSid": leg.stream_sid}))
            for f in frames(utterance + silence(700)):
                await leg.media(f)
            await leg.collect(until_ms_of_audio=400, idle_s=3)
    assert len(leg.audio) >= 400 * 8
    assert captured_logs.events("call.unknown_event")[0]["twilio_event"] == "brand-new"


async def test_duplicate_stream_for_a_live_call_is_refused(captured_logs) -> None:
    async with bridge() as (url, rt):
        async with media_socket(url) as first:
            await Leg(first, 5).start()
            await wait_calls(rt, 1, timeout=5)
            async with media_socket(url) as second:
                await Leg(second, 5).start()
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    with trio.fail_after(5):
                        await second.get_message()
            assert closed.value.reason.code == 1008
            assert list(rt.calls) == [sid("CA", 5)]
    assert captured_logs.events("call.duplicate_refused")


async def test_idle_timeout_ends_the_call(captured_logs) -> None:
    cfg = make_config(calls={"idle_timeout_s": 0.3})
    async with bridge(cfg) as (url, rt):
        async with media_socket(url) as ws:
            await Leg(ws, 6).start()
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                with trio.fail_after(5):
                    await ws.get_message()
    assert closed.value.reason.code == 1000
    assert captured_logs.events("call.ended")[0]["outcome"] == "idle-timeout"


async def test_busy_when_full() -> None:
    cfg = make_config(server={"max_calls": 1}, fallback={"say": "We are busy.", "dial": ""})
    async with bridge(cfg) as (url, rt):
        async with media_socket(url) as ws:
            await Leg(ws, 8).start()
            await wait_calls(rt, 1, timeout=5)
            resp = await post_signed(url, "/voice", VOICE_FORM)
    root = ET.fromstring(resp.text)
    assert children(root) == ["Say", "Hangup"] and root.findtext("Say") == "We are busy."


def task_count() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    return walk(trio.lowlevel.current_root_task())


async def test_no_task_outlives_its_call() -> None:
    async with bridge() as (url, rt):
        baseline = task_count()
        for n in range(3):
            await run_echo_call(url, 300 + n, tone(400, 500))
        with trio.fail_after(5):
            while rt.calls or rt.active:
                await rt.calls_changed.wait()
            # hypercorn closes the finished connections' tasks a moment later
            while task_count() > baseline:
                await trio.sleep(0.01)
        assert task_count() == baseline and rt.calls == {}


async def test_secrets_never_logged(captured_logs) -> None:
    async with bridge() as (url, _):
        await post_signed(url, "/voice", VOICE_FORM, signature="bad")
        await run_echo_call(url, 9, tone(400, 500))
    assert TOKEN not in captured_logs.text
