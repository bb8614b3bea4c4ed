"""Fake agent servers for the provider tests, and what they share.

* :mod:`fakes.openai_realtime` — a fake OpenAI Realtime (GA) WebSocket server;
* :mod:`fakes.azure_openai` — the same behind Azure's GA front door (``api-key``, ``?model=<deployment>``);
* :mod:`fakes.deepgram` — a fake Deepgram Voice Agent API v1 server;
* :mod:`fakes.elevenlabs` — a fake ElevenLabs Agents server (conversation socket + signed-URL HTTP);
* :mod:`fakes.gemini` — a fake Gemini Live (BidiGenerateContent) server, PCM16 16/24 kHz;
* :mod:`fakes.ref_agent` — the reference agent for twibridge protocol v1
  (also runnable: ``cd tests && python -m fakes.ref_agent --port 9000``).

The fakes carry their own G.711 μ-law code on purpose: a fake that reused
the bridge's codec could not catch a bug in it.
"""

from __future__ import annotations

import json
import math
import struct
from functools import lru_cache, partial
from typing import Any, Awaitable, Callable

import trio

FRAME_BYTES = 160  # 20 ms of μ-law 8 kHz
SILENCE = b"\xff"


def ulaw_to_linear(u: int) -> int:
    """One G.711 μ-law byte → a 16-bit sample (the ITU-T reference algorithm)."""
    u = ~u & 0xFF
    magnitude = ((((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)) - 0x84
    return -magnitude if u & 0x80 else magnitude


def linear_to_ulaw(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = 7
    while exponent > 0 and not magnitude & (0x4000 >> (7 - exponent)):
        exponent -= 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


_DECODE = [ulaw_to_linear(u) for u in range(256)]


def dbfs(ulaw: bytes) -> float:
    """RMS level of μ-law audio in dBFS (-100 for digital silence)."""
    if not ulaw:
        return -100.0
    mean_sq = sum(_DECODE[b] ** 2 for b in ulaw) / len(ulaw)
    return 10 * math.log10(mean_sq / 32768**2) if mean_sq else -100.0


@lru_cache(maxsize=64)  # pure-Python synthesis is slow; bytes are immutable, so share them
def tone(ms: int, freq: float = 440.0, amp: float = 0.3) -> bytes:
    """A sine as μ-law 8 kHz (amp 0.3 ≈ -13 dBFS: clearly speech-loud)."""
    n = 8 * ms
    return bytes(linear_to_ulaw(int(amp * 32767 * math.sin(2 * math.pi * freq * i / 8000))) for i in range(n))


def silence(ms: int) -> bytes:
    return SILENCE * (8 * ms)


def frames(audio: bytes) -> list[bytes]:
    return [audio[i:i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]


def pcm16_bytes(ulaw: bytes) -> bytes:
    return struct.pack(f"<{len(ulaw)}h", *(_DECODE[b] for b in ulaw))


class EnergyVad:
    """Speech = ``start_ms`` of frames above ``threshold_dbfs``; a turn ends after ``silence_ms`` below.

    Enough to drive a fake's turn-taking from real audio; time is audio time
    (bytes / 8), so the fakes behave the same at any pacing.
    """

    def __init__(self, threshold_dbfs: float = -35.0, start_ms: int = 60, silence_ms: int = 500,
                 prefix_ms: int = 300) -> None:
        self.threshold, self.start_ms, self.silence_ms, self.prefix_ms = threshold_dbfs, start_ms, silence_ms, prefix_ms
        self.t_ms = 0
        self.speaking = False
        self._loud_ms = self._quiet_ms = 0
        self._rest = b""
        self.utterance = bytearray()
        self._recent = bytearray()

    def feed(self, ulaw: bytes) -> list[tuple[str, int]]:
        """Audio in; ``[("started", audio_start_ms) | ("stopped", audio_end_ms), …]`` out."""
        out: list[tuple[str, int]] = []
        data = self._rest + ulaw
        whole = len(data) - len(data) % FRAME_BYTES
        self._rest = data[whole:]
        for i in range(0, whole, FRAME_BYTES):
            frame = data[i:i + FRAME_BYTES]
            loud = dbfs(frame) > self.threshold
            self.t_ms += 20
            if not self.speaking:
                self._recent = (self._recent + frame)[-8 * (self.prefix_ms + self.start_ms):]
                self._loud_ms = self._loud_ms + 20 if loud else 0
                if self._loud_ms >= self.start_ms:
                    self.speaking, self._quiet_ms = True, 0
                    self.utterance = bytearray(self._recent)
                    out.append(("started", max(0, self.t_ms - self._loud_ms - self.prefix_ms)))
            else:
                self.utterance += frame
                self._quiet_ms = 0 if loud else self._quiet_ms + 20
                if self._quiet_ms >= self.silence_ms:
                    self.speaking, self._loud_ms = False, 0
                    del self.utterance[len(self.utterance) - 8 * self._quiet_ms:]
                    out.append(("stopped", self.t_ms - self._quiet_ms))
        return out


class Recorder:
    """What a fake server received, with a wait that needs no polling."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._changed = trio.Event()

    def record(self, message: dict[str, Any]) -> None:
        self.received.append(message)
        self.changed()

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("type") == kind]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every change); return its value."""
        with trio.fail_after(timeout):
            while not (value := predicate()):
                await self._changed.wait()
            return value


class WsFake(Recorder):
    """A fake provider's WebSocket server: the upgrades it saw, its connections (all and live), its URL.

    A subclass writes ``_handle(request)`` (the provider's checks, then
    :meth:`connected` around its connection's run)."""

    def __init__(self) -> None:
        super().__init__()
        self.upgrades: list[dict[str, str]] = []  # request headers of every upgrade (lower-case names)
        self.connections = self.live = 0
        self.url = ""

    async def listen(self, nursery: trio.Nursery, path: str) -> str:
        from trio_websocket import serve_websocket

        server = await nursery.start(partial(serve_websocket, self._handle, "127.0.0.1", 0, ssl_context=None))
        self.url = f"ws://127.0.0.1:{server.port}{path}"
        return self.url

    async def _handle(self, request: Any) -> None:
        raise NotImplementedError

    def upgrade(self, request: Any) -> dict[str, str]:
        """Record the upgrade's headers (lower-case names) and return them."""
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        self.upgrades.append(headers)
        self.changed()
        return headers

    async def connected(self, run: Callable[[], Awaitable[None]]) -> None:
        """Count one accepted connection while ``run()`` serves it."""
        self.connections += 1
        self.live += 1
        try:
            await run()
        finally:
            self.live -= 1
            self.changed()


class WsConn:
    """One connection of a fake provider: a send that ignores a peer already gone, and the receive
    loop (:meth:`handle` per message) in the connection's own nursery (for replies it runs)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.nursery: trio.Nursery | None = None

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        from trio_websocket import ConnectionClosed

        try:
            await self.ws.send_message(message if isinstance(message, (str, bytes)) else json.dumps(message))
        except ConnectionClosed:
            pass

    async def serve_messages(self) -> None:
        from trio_websocket import ConnectionClosed

        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            try:
                while not self.ws.closed:
                    await self.handle(await self.ws.get_message())
            except ConnectionClosed:
                pass
            nursery.cancel_scope.cancel()

    async def handle(self, raw: str | bytes) -> None:
        raise NotImplementedError


class SessionEvents:
    """Drains an agent session in the background (as the supervisor would), recording events.

    ``error`` holds the exception that ended :meth:`run` (AgentDisconnected
    or AgentFailed), so a test can wait for it like for any event.
    """

    def __init__(self, session: Any) -> None:
        self.session = session
        self.events: list[Any] = []
        self.error: BaseException | None = None
        self._changed = trio.Event()

    async def run(self) -> None:
        from twibridge.agents.base import AgentDisconnected, AgentFailed

        try:
            while True:
                self.events.append(await self.session.receive())
                self._notify()
        except (AgentDisconnected, AgentFailed) as exc:
            self.error = exc
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        with trio.fail_after(timeout):
            while not (value := predicate()):
                await self._changed.wait()
            return value
