"""A lean fake OpenAI Realtime server for the agent-leg bench (its own process).

Unlike ``tests/fakes/openai_realtime.py`` (strict, for correctness tests),
this one is built to cost as little CPU as possible, so that at 200 calls it
is not the bottleneck: a raw WebSocket server (:mod:`bench.wsraw`, big-int
unmasking), no JSON parse for ``input_audio_buffer.append`` (the audio
string is cut out of the text), and "speech" = any frame that is not μ-law
digital silence (compared as base64 text).

Behaviour, per connection:

* upgrade on ``/v1/realtime`` with ``Authorization: Bearer <key>`` (else 401);
  ``session.created``; ``session.update`` → ``session.updated``;
* server VAD look-alike: 3 voiced frames → ``input_audio_buffer.speech_started``
  (which cancels a response still being sent); 500 ms of silence →
  ``speech_stopped`` + ``committed`` and a response that echoes the
  utterance: ``response.created``, audio deltas of 200 ms sent at once
  (the real API also streams faster than real time), ``…audio.done``,
  ``response.done``;
* both dialects: the GA names (``response.output_audio.delta``, as
  twibridge speaks) and, when the client sends the ``OpenAI-Beta`` header,
  the retired beta names (``response.audio.delta``), which Twilio's Python
  sample still speaks.
"""

from __future__ import annotations

import base64
import json
import sys
from itertools import count

import trio

from bench import fakeserver
from bench.fakeserver import log
from bench.wsraw import OP_TEXT, RawWebSocket, accept, server_frame

SILENCE_B64 = base64.b64encode(b"\xff" * 160).decode()
START_FRAMES, END_FRAMES = 3, 25
DELTA_BYTES = 1600  # 200 ms
_APPEND = '"input_audio_buffer.append"'



def _audio_of(raw: str) -> str | None:
    """The ``audio`` string of an append message, without a JSON parse."""
    i = raw.find('"audio"')
    if i < 0:
        return None
    j = raw.find('"', raw.find(":", i) + 1)
    k = raw.find('"', j + 1)
    return raw[j + 1:k] if j >= 0 and k > j else None


class Conn:
    ids = count(1)
    #: Appends received over all connections (logged as ``fake.totals`` on SIGTERM: a client that
    #: never closes its OpenAI socket, like Twilio's sample, is still counted).
    total_appends = 0
    live = 0

    def __init__(self, ws: RawWebSocket, beta: bool) -> None:
        self.ws, self.beta = ws, beta
        self.n = next(self.ids)
        self.voiced = self.quiet = 0
        self.speaking = False
        self.utterance: list[str] = []
        self.active: list[bool] | None = None  # [cancelled] of the response being sent
        self.seq = count(1)
        self.appends = 0

    async def send(self, event: dict[str, object]) -> None:
        await self.ws.send(server_frame(OP_TEXT, json.dumps(event).encode()))

    async def run(self) -> None:
        await self.send({"type": "session.created", "session": {"id": f"sess_{self.n}", "object": "realtime.session"}})
        async with trio.open_nursery() as nursery:
            while True:
                msg = await self.ws.receive()
                if msg is None:
                    break
                raw = msg[1].decode()
                if _APPEND in raw[:64]:
                    self.appends += 1
                    Conn.total_appends += 1
                    audio = _audio_of(raw)
                    if audio is not None and len(audio) > len(SILENCE_B64):  # several 20 ms frames in one append
                        pcm = base64.b64decode(audio)
                        for i in range(0, len(pcm), 160):
                            await self.on_audio(base64.b64encode(pcm[i:i + 160]).decode(), nursery)
                    elif audio is not None:
                        await self.on_audio(audio, nursery)
                    continue
                event = json.loads(raw)
                kind = event.get("type")
                if kind == "session.update":
                    await self.send({"type": "session.updated", "session": event.get("session", {})})
                elif kind == "response.cancel" and self.active is not None:
                    self.active[0] = True
            nursery.cancel_scope.cancel()

    async def on_audio(self, audio: str, nursery: trio.Nursery) -> None:
        voiced = audio != SILENCE_B64
        self.voiced = self.voiced + 1 if voiced else 0
        self.quiet = 0 if voiced else self.quiet + 1
        if self.speaking:
            self.utterance.append(audio)
            if self.quiet >= END_FRAMES:
                self.speaking = False
                item = f"item_u{self.n}_{next(self.seq)}"
                await self.send({"type": "input_audio_buffer.speech_stopped", "item_id": item, "audio_end_ms": 0})
                await self.send({"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": None})
                audio_bytes = b"".join(base64.b64decode(a) for a in self.utterance[:-END_FRAMES])
                self.utterance = []
                self.active = [False]
                nursery.start_soon(self.respond, audio_bytes, self.active)
        elif self.voiced >= START_FRAMES:
            self.speaking = True
            self.utterance = []
            if self.active is not None:
                self.active[0] = True  # interrupt_response
            await self.send({"type": "input_audio_buffer.speech_started", "item_id": f"item_u{self.n}",
                             "audio_start_ms": 0})

    async def respond(self, audio: bytes, state: list[bool]) -> None:
        rid, item = f"resp_{self.n}_{next(self.seq)}", f"item_a{self.n}_{next(self.seq)}"
        delta_type = "response.audio.delta" if self.beta else "response.output_audio.delta"
        done_type = "response.audio.done" if self.beta else "response.output_audio.done"
        await self.send({"type": "response.created", "response": {"id": rid, "object": "realtime.response",
                                                                  "status": "in_progress", "output": []}})
        base = {"response_id": rid, "item_id": item, "output_index": 0, "content_index": 0}
        for i in range(0, len(audio), DELTA_BYTES):
            if state[0]:
                break
            await self.send({"type": delta_type, **base,
                             "delta": base64.b64encode(audio[i:i + DELTA_BYTES]).decode()})
            await trio.sleep(0)
        status = "cancelled" if state[0] else "completed"
        await self.send({"type": done_type, **base})
        await self.send({"type": "response.done", "response": {"id": rid, "object": "realtime.response",
                                                               "status": status, "output": []}})
        if self.active is state:
            self.active = None


async def handle(key: str, stream: trio.SocketStream) -> None:
    try:
        with trio.move_on_after(10) as cs:
            got = await accept(stream)
        if cs.cancelled_caught or got is None:
            return
        path, headers, ws = got
        if not path.startswith("/v1/realtime") or headers.get("authorization") != f"Bearer {key}":
            return  # (the 101 went already; a lean fake just drops a wrong client)
        conn = Conn(ws, "openai-beta" in headers)
        Conn.live += 1
        try:
            await conn.run()
        finally:
            Conn.live -= 1
            log("conn.ended", appends=conn.appends)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


async def main_async(host: str, port: int, key: str) -> None:
    await fakeserver.serve(handle, "fake-realtime", lambda: {"appends": Conn.total_appends, "live": Conn.live},
                           host, port, key)


def main(argv: list[str] | None = None) -> int:
    return fakeserver.main("python -m bench.fake_realtime", main_async, argv)


if __name__ == "__main__":
    sys.exit(main())
