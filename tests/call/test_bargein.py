"""Turn-taking and barge-in through the real bridge, driven by the simulate-call library.

The echo agent repeats each utterance, so the timeline is known: a reply
starts ``end_of_turn_ms`` after the caller stops.  A caller who talks over
a reply must cut it off: a ``clear`` within one frame of the VAD decision,
nothing of the cancelled turn after it, silence in what the caller hears.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from support import ACCOUNT_SID, TOKEN, Leg, bridge, frames, make_config, media_socket, silence, tone
from twibridge.agents.echo import EchoProvider, EchoSession
from twibridge.audio.g711 import pcm16_to_ulaw, ulaw_dbfs, ulaw_to_pcm16
from twibridge.config import Config
from twibridge.server.app import make_runtime
from twibridge.simulate import CallOptions, build_report, load_caller_audio, simulate_call
from twibridge.twilio import emulation as emu

FIXTURES = Path(__file__).parent.parent / "fixtures" / "audio"


def utterance(name: str, start_ms: int, end_ms: int) -> bytes:
    return load_caller_audio(FIXTURES / name).ulaw[start_ms * 8 : end_ms * 8]


def attenuate(ulaw: bytes, db: float) -> bytes:
    pcm = np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64) * 10 ** (db / 20)
    return pcm16_to_ulaw(np.clip(pcm, -32768, 32767).astype("<i2").tobytes())


class RecordingEcho(EchoProvider):
    """The echo agent, recording what the bridge tells it on barge-in."""

    interrupts: list[tuple[str | None, int]]

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.interrupts = []

    async def connect(self, call: Any, nursery: trio.Nursery) -> EchoSession:
        session = await super().connect(call, nursery)
        provider = self

        async def interrupt(item_id: str | None, heard_ms: int) -> None:
            provider.interrupts.append((item_id, heard_ms))

        session.interrupt = interrupt  # type: ignore[method-assign]
        return session


def ms_silent(heard: bytes, start_ms: float, end_ms: float) -> bool:
    chunk = heard[int(start_ms) * 8 : int(end_ms) * 8]
    return all(ulaw_dbfs(chunk[i : i + 160]) < -50 for i in range(0, len(chunk) - 159, 160))


async def test_caller_talking_over_a_long_reply_cuts_it_off(captured_logs) -> None:
    first = utterance("refund_16k_pcm16.wav", 0, 3200)  # ~3 s of speech
    second = utterance("order_status_8k_mulaw.wav", 200, 2200)
    # the reply to `first` starts ~500 ms after it ends; talk over it 1 s in
    audio = silence(200) + first + silence(1500) + second + silence(1500)
    provider = RecordingEcho(make_config())
    rt = make_runtime(make_config())
    rt.provider_factory = lambda cfg: provider
    with trio.fail_after(60):
        async with bridge(rt.config, rt) as (url, _):
            result = await simulate_call(url, TOKEN, audio, CallOptions(account_sid=ACCOUNT_SID, tail_s=1.0))
    report = build_report(result)
    assert result.ok, (result.detail, result.protocol_errors)
    assert len(result.clears) == 1
    clear_ms = result.clears[0]
    (barge,) = captured_logs.events("call.barge_in")
    # the decision was taken on the frame ending at audio_ms; the clear follows within one frame
    assert 0 <= clear_ms - barge["audio_ms"] <= 20 + 20, (clear_ms, barge)
    assert barge["clear_latency_ms"] < 20
    # nothing of the cancelled turn after the clear: later marks are of a new generation
    after = [e for e in result.events if e["t_ms"] > clear_ms and e["dir"] == "from_server" and e["event"] == "mark"]
    assert all(str(e.get("name", "")).startswith("g1:") for e in after), after
    # and the caller hears silence from the clear until the next reply
    next_reply = min(t["reply_start_ms"] for t in report["turns"] if t["reply_start_ms"] and t["reply_start_ms"] > clear_ms)
    assert ms_silent(result.heard_ulaw, clear_ms + 20, next_reply - 20)
    # the agent was told what was heard: never beyond what was sent, and about what played
    ((item, heard_ms),) = provider.interrupts
    assert item == "echo-1" and 0 < heard_ms <= barge["sent_ms"]
    reply_start = report["turns"][0]["reply_start_ms"]
    assert abs(heard_ms - (clear_ms - reply_start)) <= 120  # marks every 100 ms + the clock
    assert report["barge_ins"][0]["clear_ms"] == pytest.approx(clear_ms, abs=1)


async def test_played_ms_matches_what_the_caller_heard(captured_logs) -> None:
    audio = silence(200) + utterance("hello_22k_pcm16.wav", 0, 1000) + silence(1500)
    with trio.fail_after(60):
        async with bridge() as (url, _):
            result = await simulate_call(url, TOKEN, audio, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
    # leaving `bridge()` drained the server: the call has ended and logged its summary
    assert result.ok
    (ended,) = captured_logs.events("call.ended")
    emulator_played = sum(b - a for a, b in result.played_intervals)
    # the bridge learns what played only from Twilio's mark echoes
    assert ended["audio_played_ms"] == ended["audio_out_ms"] > 0
    assert abs(ended["audio_played_ms"] - emulator_played) <= 1


async def test_noise_bursts_and_the_agents_own_echo_do_not_barge_in(captured_logs) -> None:
    first = utterance("refund_16k_pcm16.wav", 0, 2400)
    n = len(first) // 8
    # after the caller stops, the reply starts ~500 ms later: feed back an
    # echo of it 15 dB down (a speakerphone), plus a 160 ms door slam
    echo = attenuate(first, -15.0)
    slam = tone(160, 200, amp=0.8)
    tail = silence(500) + echo[: 8 * 800] + slam + echo[8 * 960 :] + silence(1200)
    audio = silence(200) + first + tail
    with trio.fail_after(60):
        async with bridge() as (url, _):
            result = await simulate_call(url, TOKEN, audio, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
    assert result.ok, result.detail
    assert result.clears == [] and captured_logs.events("call.barge_in") == []
    heard_ms = sum(b - a for a, b in result.played_intervals)
    assert heard_ms >= n - 200  # the whole reply played


async def test_real_speech_over_the_reply_does_barge_in(captured_logs) -> None:
    first = utterance("refund_16k_pcm16.wav", 0, 2400)
    loud = utterance("order_status_8k_mulaw.wav", 200, 1400)
    audio = silence(200) + first + silence(900) + loud + silence(1500)
    with trio.fail_after(60):
        async with bridge() as (url, _):
            result = await simulate_call(url, TOKEN, audio, CallOptions(account_sid=ACCOUNT_SID, tail_s=0.5))
    assert len(result.clears) >= 1 and captured_logs.events("call.barge_in")


async def test_shuffled_duplicated_and_missing_frames_are_ordered_and_counted(captured_logs) -> None:
    speech = tone(900, 300)
    fs = frames(speech + silence(800))
    order = list(range(len(fs)))
    order[10], order[11] = order[11], order[10]  # reordered
    order.insert(20, 19)  # duplicated
    del order[order.index(30)]  # missing: filled with silence
    async with bridge() as (url, _):
        async with media_socket(url) as ws:
            leg = Leg(ws, 77)
            await leg.start()
            t0 = trio.current_time()
            for n, i in enumerate(order):  # at Twilio's pace: gap fill is bounded by wall time (issue #23)
                await trio.sleep_until(t0 + n * 0.02)
                await ws.send_message(emu.build_inbound_media(i + 2, leg.stream_sid, i + 1, i * 20, fs[i]))
            leg.seq = len(fs) + 2
            await leg.collect(until_ms_of_audio=700, idle_s=3)
            await leg.stop()
    assert len(leg.audio) >= 700 * 8  # the echo still came back whole
    jitter = captured_logs.events("call.ended")[0]["jitter"]
    assert (jitter["reordered"], jitter["duplicates"], jitter["gaps_filled"], jitter["gap_ms"]) == (1, 1, 1, 20)
