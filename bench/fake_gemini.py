"""A lean fake Gemini Live API (BidiGenerateContent) server for the Gemini capacity sweep (its own process).

Unlike ``tests/fakes/gemini.py`` (strict, for correctness tests), this one
is built to cost little CPU, so that it is not the bottleneck of
``python -m bench --only gemini`` (the driver reports its CPU as ``aux``):
a raw WebSocket server (:mod:`bench.wsraw`), no JSON parse for
``realtimeInput`` (the base64 string is cut out of the text), "speech" =
any 20 ms of 16 kHz PCM that is not digital silence, and replies built as
strings, not with ``json.dumps``.

Behaviour, per connection (what ``twibridge/agents/gemini_protocol.py`` speaks):

* upgrade on ``/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent``
  with ``x-goog-api-key: <key>``; a wrong key or path: close 1008 (as Gemini does);
* the first message must be ``setup`` with ``model: "models/…"`` and
  ``responseModalities: ["AUDIO"]`` (else close 1007) → ``setupComplete``;
* ``realtimeInput.audio`` must be ``audio/pcm;rate=16000`` (else close 1007);
  any length (twibridge sends up to 100 ms in one message), split into 20 ms;
* a VAD look-alike, like :mod:`bench.fake_realtime`'s: 3 voiced frames start
  an utterance (speech during a reply → ``serverContent.interrupted`` +
  ``turnComplete``, the rest of that reply is not sent); 500 ms of silence end
  it and the utterance is echoed as PCM16 **24 kHz** (nearest-sample 16 → 24 kHz:
  the bench times the reply, it does not judge its sound) in
  ``serverContent.modelTurn.parts[].inlineData`` chunks of 200 ms with
  ``mimeType: "audio/pcm;rate=24000"``, sent at once (the real API streams
  faster than real time too), then ``generationComplete`` and ``turnComplete``;
* ``clientContent`` / ``toolResponse`` are accepted and ignored.

The 16 kHz input lags the caller's μ-law by twibridge's half-band filter
(47 taps): a frame's first 48 samples may carry the previous frame's tail,
so a frame is voiced only if a sample after them is not zero.
"""

from __future__ import annotations

import base64
import json
import sys
from array import array
from itertools import count

import trio

from bench import fakeserver
from bench.fakeserver import log
from bench.wsraw import OP_TEXT, RawWebSocket, accept, server_frame

PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
INPUT_MIME = "audio/pcm;rate=16000"
OUTPUT_MIME = "audio/pcm;rate=24000"
FRAME_16K = 640  # 20 ms of PCM16 at 16 kHz
TAIL_BYTES = 96  # the upsampler's spill into the next frame (48 samples)
START_FRAMES, END_FRAMES = 3, 25
CHUNK_24K = 9600  # 200 ms of PCM16 at 24 kHz
_AUDIO_HEAD = '{"realtimeInput":{"audio":{"data":"'
_AUDIO_TAIL = '","mimeType":"' + INPUT_MIME + '"}}}'
_SETUP_COMPLETE = '{"setupComplete":{"sessionId":"s%d"}}'
_CHUNK = ('{"serverContent":{"modelTurn":{"role":"model","parts":[{"inlineData":{"mimeType":"'
          + OUTPUT_MIME + '","data":"%s"}}]}}}')
_GENERATION_COMPLETE = '{"serverContent":{"generationComplete":true}}'
_TURN_COMPLETE = '{"serverContent":{"turnComplete":true}}'
_INTERRUPTED = '{"serverContent":{"interrupted":true}}'



def audio_of(raw: str) -> str | None:
    """The base64 audio of a ``realtimeInput`` message as twibridge writes it, or None (not one)."""
    if not raw.startswith(_AUDIO_HEAD):
        return None
    end = raw.find('"', len(_AUDIO_HEAD))
    return raw[len(_AUDIO_HEAD):end] if end > 0 else None


def voiced(frame: bytes) -> bool:
    """20 ms of 16 kHz PCM16 that is not digital silence (past the previous frame's filter tail)."""
    return frame.count(0, TAIL_BYTES) != len(frame) - TAIL_BYTES


def up_16k_to_24k(pcm: bytes) -> bytes:
    """Nearest-sample 16 → 24 kHz (C-speed slicing): samples 2k, 2k+1, 2k+1 for each pair."""
    a = array("h", pcm[:len(pcm) // 4 * 4])
    if sys.byteorder != "little":
        a.byteswap()
    out = array("h", bytes(len(a) * 3))
    out[0::3], out[1::3], out[2::3] = a[0::2], a[1::2], a[1::2]
    if sys.byteorder != "little":
        out.byteswap()
    return out.tobytes()


class Conn:
    ids = count(1)
    total_frames = 0
    live = 0

    def __init__(self, ws: RawWebSocket) -> None:
        self.ws = ws
        self.n = next(self.ids)
        self.ready = False
        self.voiced = self.quiet = 0
        self.speaking = False
        self.utterance: list[bytes] = []
        self.active: list[bool] | None = None  # [cancelled] of the reply being sent
        self.frames = 0
        self.close_code = 0

    async def send(self, text: str) -> None:
        await self.ws.send(server_frame(OP_TEXT, text.encode()))

    async def close(self, code: int) -> None:
        self.close_code = code
        await self.ws.aclose(code)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                msg = await self.ws.receive()
                if msg is None:
                    break
                raw = msg[1].decode()
                if self.ready:
                    audio = audio_of(raw)
                    if audio is not None:
                        if not raw.endswith(_AUDIO_TAIL):
                            await self.close(1007)
                            break
                        await self.on_audio(base64.b64decode(audio), nursery)
                        continue
                if not await self.on_message(raw):
                    break
            nursery.cancel_scope.cancel()

    async def on_message(self, raw: str) -> bool:
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or len(msg) != 1:
            await self.close(1007)
            return False
        (kind, body), = msg.items()
        if not self.ready:
            gen = body.get("generationConfig") if isinstance(body, dict) else None
            if (kind != "setup" or not str(body.get("model", "")).startswith("models/")
                    or not isinstance(gen, dict) or gen.get("responseModalities") != ["AUDIO"]):
                await self.close(1007)
                return False
            self.ready = True
            await self.send(_SETUP_COMPLETE % self.n)
            return True
        if kind == "realtimeInput":  # not the audio shape twibridge sends (e.g. another MIME type)
            await self.close(1007)
            return False
        if kind not in ("clientContent", "toolResponse"):
            await self.close(1007)
            return False
        return True

    async def on_audio(self, pcm: bytes, nursery: trio.Nursery) -> None:
        for i in range(0, len(pcm), FRAME_16K):
            frame = pcm[i:i + FRAME_16K]
            self.frames += 1
            Conn.total_frames += 1
            v = voiced(frame)
            self.voiced = self.voiced + 1 if v else 0
            self.quiet = 0 if v else self.quiet + 1
            if self.speaking:
                self.utterance.append(frame)
                if self.quiet >= END_FRAMES:
                    self.speaking = False
                    audio = b"".join(self.utterance[:-END_FRAMES])
                    self.utterance = []
                    self.active = [False]
                    nursery.start_soon(self.respond, audio, self.active)
            elif self.voiced >= START_FRAMES:
                self.speaking = True
                self.utterance = []
                if self.active is not None and not self.active[0]:
                    self.active[0] = True  # barge-in: the rest of the reply is dropped
                    await self.send(_INTERRUPTED)
                    await self.send(_TURN_COMPLETE)

    async def respond(self, audio16: bytes, state: list[bool]) -> None:
        audio = up_16k_to_24k(audio16)
        for i in range(0, len(audio), CHUNK_24K):
            if state[0]:
                break
            await self.send(_CHUNK % base64.b64encode(audio[i:i + CHUNK_24K]).decode())
            await trio.sleep(0)
        if not state[0]:
            await self.send(_GENERATION_COMPLETE)
            await self.send(_TURN_COMPLETE)
        if self.active is state:
            self.active = None


async def handle(key: str, stream: trio.SocketStream) -> None:
    try:
        with trio.move_on_after(10) as cs:
            got = await accept(stream)
        if cs.cancelled_caught or got is None:
            return
        path, headers, ws = got
        if path.split("?")[0] != PATH or headers.get("x-goog-api-key") != key:
            await ws.aclose(1008)  # Gemini accepts the upgrade, then closes 1008 "API key not valid"
            return
        conn = Conn(ws)
        Conn.live += 1
        try:
            await conn.run()
        finally:
            Conn.live -= 1
            log("conn.ended", frames=conn.frames, close=conn.close_code)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


async def main_async(host: str, port: int, key: str, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
                     signals: bool = True) -> None:
    await fakeserver.serve(handle, "fake-gemini", lambda: {"frames": Conn.total_frames, "live": Conn.live}, host, port, key,
                           task_status=task_status, signals=signals)


def main(argv: list[str] | None = None) -> int:
    return fakeserver.main("python -m bench.fake_gemini", main_async, argv)


if __name__ == "__main__":
    sys.exit(main())
