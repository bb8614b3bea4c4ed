"""Shared test support: configs, a real server on 127.0.0.1 port 0, a lean Twilio leg.

One place for the helpers every integration test needs (style.md: never
copied per file).  The full-fidelity Twilio emulation is ``twibridge.simulate``;
this lean leg exists to send *bad* traffic the simulator never would.
"""

from __future__ import annotations

import math
import struct
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Mapping

import httpx
import numpy as np
import trio
from trio_websocket import WebSocketConnection

from twibridge.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from twibridge.config import Config, build_config
from twibridge.runtime import Runtime
from twibridge.server.app import make_runtime, running_server
from twibridge.twilio import emulation as emu
from twibridge.twilio import protocol as tw
from twibridge.twilio import stream_token
from twibridge.twilio.signature import SignatureChecker
from twibridge.agents.wsclient import connect_ws

TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "0" * 32


def stream_params(call_sid: str, params: Mapping[str, str] | None = None,
                  account_sid: str = ACCOUNT_SID) -> dict[str, str]:
    """``customParameters`` as Twilio sends them after our ``/voice``: with the call's stream token
    (bound to the account, the CallSid and every parameter, as ``/voice`` mints it)."""
    custom = dict(params if params is not None else {"CallSid": call_sid})
    custom[stream_token.PARAMETER] = stream_token.issue(TOKEN, account_sid=account_sid, call_sid=call_sid,
                                                        params=custom, now=time.time())
    return custom


def make_config(**sections: Mapping[str, Any]) -> Config:
    # Twilio REST points at a closed loopback port unless a test gives a fake:
    # nothing in the tests may reach the real API.
    data: dict[str, Any] = {"twilio": {"auth_token": TOKEN, "account_sid": ACCOUNT_SID,
                                       "api_base_url": "http://127.0.0.1:9", "rest_timeout_s": 2},
                            "log": {"level": "debug"}}
    for name, values in sections.items():
        node = data.setdefault(name, {})
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(node.get(key), dict):
                node[key].update(value)
            else:
                node[key] = value
    return build_config(data)


@asynccontextmanager
async def bridge(config: Config | None = None, rt: Runtime | None = None) -> AsyncIterator[tuple[str, Runtime]]:
    """The real app under Hypercorn on 127.0.0.1, port 0."""
    config = config or make_config()
    rt = rt or make_runtime(config)
    async with running_server(config, rt=rt) as url:
        yield url, rt


def sid(prefix: str, n: int) -> str:
    return f"{prefix}{n:032x}"


async def post_signed(url: str, path: str, form: Mapping[str, str], token: str = TOKEN,
                      signature: str | None = None, signed_as: str | None = None) -> httpx.Response:
    """POST a form the way Twilio does (signature over the URL it requested)."""
    full = url + path
    sig = signature if signature is not None else SignatureChecker(token).sign(signed_as or full, dict(form))
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(full, data=dict(form), headers={"X-Twilio-Signature": sig} if sig else {})


def ws_url(url: str) -> str:
    return "ws://" + url.removeprefix("http://") + "/media-stream"


@asynccontextmanager
async def media_socket(url: str, token: str = TOKEN, signature: str | None = None,
                       signed_as: str | None = None) -> AsyncIterator[WebSocketConnection]:
    """Open ``/media-stream`` with Twilio's upgrade signature (or the one given)."""
    target = ws_url(url)
    sig = signature if signature is not None else SignatureChecker(token).sign(signed_as or target, {})
    async with connect_ws(target, {"X-Twilio-Signature": sig} if sig else {}) as ws:
        yield ws


class Leg:
    """A lean Twilio side of one stream: sends events, collects what comes back."""

    def __init__(self, ws: WebSocketConnection, n: int = 1) -> None:
        self.ws = ws
        self.call_sid, self.stream_sid = sid("CA", n), sid("MZ", n)
        self.seq = 0
        self.chunk = 0
        self.received: list[tw.BridgeEvent] = []
        self.audio = bytearray()

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    async def start(self, params: Mapping[str, str] | None = None, *, token: bool = True) -> None:
        """``connected`` and ``start``; ``token=False`` leaves out the stream token ``/voice`` mints."""
        await self.ws.send_message(emu.build_connected())
        custom = stream_params(self.call_sid, params) if token else dict(params or {"CallSid": self.call_sid})
        await self.ws.send_message(emu.build_start(self._next(), self.stream_sid, ACCOUNT_SID, self.call_sid, custom))

    async def media(self, frame: bytes) -> None:
        self.chunk += 1
        await self.ws.send_message(emu.build_inbound_media(self._next(), self.stream_sid, self.chunk,
                                                          (self.chunk - 1) * 20, frame))

    async def stop(self) -> None:
        await self.ws.send_message(emu.build_stop(self._next(), self.stream_sid, ACCOUNT_SID, self.call_sid))

    async def collect(self, until_ms_of_audio: int | None = None, idle_s: float = 1.5) -> None:
        """Read until ``until_ms_of_audio`` received or nothing arrives for ``idle_s``;
        echo marks back like Twilio would (at once: we do not emulate playback here)."""
        while until_ms_of_audio is None or len(self.audio) < until_ms_of_audio * 8:
            with trio.move_on_after(idle_s) as cs:
                msg = await self.ws.get_message()
            if cs.cancelled_caught:
                return
            ev = emu.parse_from_bridge(msg, self.stream_sid)
            self.received.append(ev)
            if isinstance(ev, tw.OutMedia):
                self.audio += ev.payload
            elif isinstance(ev, tw.OutMark):
                await self.ws.send_message(emu.build_mark_echo(self._next(), self.stream_sid, ev.name))


def tone(ms: int, freq: float = 440.0, amp: float = 0.3, rate: int = 8000) -> bytes:
    """A sine as μ-law (speech-loud at amp 0.3 ≈ -13 dBFS)."""
    n = rate * ms // 1000
    pcm = struct.pack(f"<{n}h", *(int(amp * 32767 * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)))
    return pcm16_to_ulaw(pcm)


def correlation(a: bytes, b: bytes) -> float:
    """Normalised correlation of two μ-law signals (aligned, over the shorter): ~1 when ``b`` echoes ``a``."""
    x = np.frombuffer(ulaw_to_pcm16(a), dtype="<i2").astype(np.float64)
    y = np.frombuffer(ulaw_to_pcm16(b), dtype="<i2").astype(np.float64)
    n = min(len(x), len(y))
    return float(np.dot(x[:n], y[:n]) / (np.sqrt(np.dot(x[:n], x[:n]) * np.dot(y[:n], y[:n])) or 1))


async def wait_calls(rt: Runtime, n: int, timeout: float = 10) -> None:
    """Until exactly ``n`` calls are live in ``rt`` (woken by its calls_changed event)."""
    with trio.fail_after(timeout):
        while len(rt.calls) != n:
            await rt.calls_changed.wait()


def silence(ms: int) -> bytes:
    return b"\xff" * (8 * ms)


def frames(audio: bytes) -> list[bytes]:
    return [audio[i:i + 160] for i in range(0, len(audio) - 159, 160)]


# -- DTMF: a receiver as a phone menu has one (Goertzel per 20 ms block) ----------

DTMF_LOWS = (697, 770, 852, 941)
DTMF_HIGHS = (1209, 1336, 1477, 1633)


def goertzel_power(samples: list[float], freq: float, rate: int = 8000) -> float:
    k = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return s1 * s1 + s2 * s2 - k * s1 * s2


def dtmf_decode(ulaw: bytes) -> str:
    """A DTMF receiver: 20 ms blocks, strongest low and high tone, a key per run of tone."""
    pcm = ulaw_to_pcm16(ulaw)
    samples = [float(v) for v in struct.unpack(f"<{len(pcm) // 2}h", pcm)]
    from twibridge.audio.dtmf import FREQUENCIES

    inverse = {v: k for k, v in FREQUENCIES.items()}
    out, prev = [], None
    for start in range(0, len(samples), 160):
        block = samples[start:start + 160]
        energy = sum(x * x for x in block)
        key = None
        if energy > 1e6:
            low = max(DTMF_LOWS, key=lambda f: goertzel_power(block, f))
            high = max(DTMF_HIGHS, key=lambda f: goertzel_power(block, f))
            lp, hp = goertzel_power(block, low), goertzel_power(block, high)
            others = [goertzel_power(block, f) for f in (*DTMF_LOWS, *DTMF_HIGHS) if f not in (low, high)]
            if min(lp, hp) > 10 * max(others):  # both tones clearly above every other key's
                key = inverse[(low, high)]
        if key is not None and key != prev:
            out.append(key)
        prev = key
    return "".join(out)
