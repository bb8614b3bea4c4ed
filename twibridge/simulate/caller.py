"""The simulated Twilio: one phone call against a bridge, over real sockets.

What Twilio does, in order, and what :func:`simulate_call` does too:

1. ``POST /voice`` with the call's form fields, signed over the exact URL
   Twilio requested (answer within 15 s, 2xx, XML, else 11200).
2. Run the TwiML (:mod:`twibridge.simulate.twiml`).  Without a
   ``<Connect><Stream>`` the call ends there (e.g. the busy answer).
3. Open the Stream URL, mapped to the server actually reached, with
   ``X-Twilio-Signature`` over the URL exactly as written and no params.
4. ``connected``, ``start`` (the ``<Parameter>``s as customParameters), then
   one 160-byte ``media`` every 20 ms of audio, paced against absolute
   deadlines so nothing drifts, ``dtmf`` at the requested times, and after
   the file plus ``tail_s`` of silence, ``stop`` and close.
5. Meanwhile read the bridge: check every frame as Twilio does (errors are
   recorded, the call goes on), feed the playback emulator and echo marks
   once their audio has played.  If the bridge closes first, the call ends
   and Twilio would run the verb after ``</Connect>``.

``speed`` runs the pacing N× faster; every time recorded stays on the audio
timeline (ms of call audio since stream start), so a report at speed 8
reads like one at speed 1.
"""

from __future__ import annotations

import math
from functools import partial
from datetime import datetime, timezone
import ssl
from typing import Callable
from urllib.parse import urlsplit

import httpx
import trio
import trio_websocket

from twibridge.logs import get_logger
from twibridge.simulate.events import EventLog
from twibridge.simulate.playback import PlaybackBuffer
from twibridge.simulate.record import CallOptions, CallResult, Outcome
from twibridge.simulate.twiml import (StreamVerb, TwimlError, TwimlPlan, is_loopback, new_sid, origin, parse_twiml,
                                      sign, signable, voice_params)
from twibridge.twilio import emulation as emu
from twibridge.twilio import protocol as p
from twibridge.twilio import stream_token

__all__ = ["CallOptions", "CallResult", "Outcome", "simulate_call"]

log = get_logger("twibridge.simulate")

#: Twilio gives up on ``/voice`` after 15 s (11200).
VOICE_TIMEOUT_S = 15.0
#: Twilio's websocket connect timeout is ~10 s (31901).
CONNECT_TIMEOUT_S = 10.0
#: Bound on the close handshake and on status callbacks at teardown.
CLOSE_TIMEOUT_S = 2.0
#: Extra time allowed beyond the audio itself before ``timeout`` fires.
TIMEOUT_MARGIN_S = 30.0
MAX_PROTOCOL_ERRORS = 100
DTMF_DIGITS = frozenset("0123456789*#")


def _ws_target(url: str, server: str) -> tuple[str, str, int, bool, str]:
    """(host header, connect host, port, tls, resource): ``url``'s path on ``server``'s address."""
    u, s = urlsplit(url), urlsplit(server)
    tls = s.scheme == "https"
    resource = (u.path or "/") + (f"?{u.query}" if u.query else "")
    return u.netloc, s.hostname or "127.0.0.1", s.port or (443 if tls else 80), tls, resource


def _http_target(url: str, server: str) -> str:
    """``url``'s path and query on ``server``'s scheme, host and port."""
    u, s = urlsplit(url), urlsplit(server)
    return f"{s.scheme}://{s.netloc}{u.path or '/'}" + (f"?{u.query}" if u.query else "")


class _Call:
    """One call's state and tasks; :func:`simulate_call` is its only user."""

    def __init__(self, server: str, token: str, audio: bytes, opts: CallOptions,
                 on_progress: Callable[[float, float], None] | None) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.opts = opts
        self.on_progress = on_progress
        tail = bytes([0xFF]) * int(opts.tail_s * 1000 * p.BYTES_PER_MS)
        self.r = CallResult(new_sid("CA"), opts.account_sid, new_sid("MZ"), audio + tail)
        self.events = EventLog()
        self.buffer = PlaybackBuffer()
        self.seq = 0
        self.lock = trio.Lock()  # sequence numbers must follow send order
        self.t0 = trio.current_time()
        self.hung_up = False  # we sent stop / started closing
        self.closed = False  # the server closed first
        self.sender_scope = trio.CancelScope()
        self.ws: trio_websocket.WebSocketConnection | None = None

    # -- time and records ----------------------------------------------

    def now_ms(self) -> float:
        return (trio.current_time() - self.t0) * 1000 * self.opts.speed

    def error(self, message: str) -> None:
        errors = self.r.protocol_errors
        if len(errors) < MAX_PROTOCOL_ERRORS:
            errors.append(message)
        elif len(errors) == MAX_PROTOCOL_ERRORS:
            errors.append("further protocol errors suppressed")
        self.events.add(self.now_ms(), "from_server", "error", error=message)
        log.warning("simulate.protocol_error", call_sid=self.r.call_sid, error=message)

    def end(self, outcome: Outcome, detail: str) -> None:
        if self.r.detail:
            return  # the first reason wins
        self.r.outcome, self.r.detail = outcome, detail

    # -- HTTP: /voice and status callbacks -------------------------------

    async def fetch_twiml(self, http: httpx.AsyncClient) -> TwimlPlan | None:
        posted = self.server + self.opts.voice_path
        signed = self.opts.webhook_url or posted
        if origin(signed) != origin(posted) and not is_loopback(posted):
            self.end(Outcome.REFUSED, f"refusing to sign {signed} (public_url) for a POST to {posted}: only "
                     "for a server on that origin or on loopback (it would hand that server a valid webhook)")
            return None
        params = voice_params(self.r.call_sid, self.r.account_sid, self.opts.from_number, self.opts.to_number)
        headers = {"X-Twilio-Signature": sign(self.token, signed, params), "User-Agent": "TwilioProxy/1.1"}
        self.events.add(0.0, "to_server", "voice", url=signed)
        try:
            with trio.fail_after(VOICE_TIMEOUT_S):
                resp = await http.post(posted, data=params, headers=headers)
        except trio.TooSlowError:
            self.end(Outcome.REFUSED, f"11200: POST {posted} took over {VOICE_TIMEOUT_S:.0f} s")
            return None
        except httpx.HTTPError as exc:
            self.end(Outcome.REFUSED, f"11200: POST {posted} failed: {exc or type(exc).__name__}")
            return None
        self.r.twiml = resp.text
        ctype = resp.headers.get("content-type", "").split(";")[0].strip()
        self.events.add(0.0, "from_server", "twiml", status=resp.status_code, content_type=ctype)
        if not 200 <= resp.status_code < 300:
            self.end(Outcome.REFUSED, f"11200: POST {posted} answered HTTP {resp.status_code}: {resp.text[:200]!r}")
            return None
        if ctype not in ("text/xml", "application/xml"):
            self.end(Outcome.REFUSED, f"11200: /voice answered Content-Type {ctype!r}, not text/xml")
            return None
        try:
            plan = parse_twiml(resp.content, allow_ws=urlsplit(signed).scheme == "http")
        except TwimlError as exc:
            self.end(Outcome.REFUSED, f"TwiML refused: {exc}")
            return None
        foreign = [u for u in (plan.stream.url, plan.stream.status_callback) if u and not signable(u, signed)] \
            if plan.stream else []
        if foreign:
            self.end(Outcome.REFUSED, f"refusing to sign {foreign[0]}: not on the origin of {signed}, the webhook "
                     "we signed (the server asked for a signature on another site's URL)")
            return None
        for warning in plan.warnings:
            self.error(warning)
        return plan

    async def status_callback(self, http: httpx.AsyncClient, url: str, event: str) -> None:
        """Twilio's stream statusCallback: a signed form POST, failures warned as 11200."""
        params = {"AccountSid": self.r.account_sid, "CallSid": self.r.call_sid, "StreamSid": self.r.stream_sid,
                  "StreamName": self.r.stream_sid, "StreamEvent": event,
                  "Timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        target = _http_target(url, self.server)
        try:
            with trio.fail_after(VOICE_TIMEOUT_S):
                resp = await http.post(target, data=params, headers={"X-Twilio-Signature": sign(self.token, url, params)})
            if not 200 <= resp.status_code < 300:
                self.error(f"11200: statusCallback {event} answered HTTP {resp.status_code}")
        except (trio.TooSlowError, httpx.HTTPError) as exc:
            self.error(f"11200: statusCallback {event} failed: {exc or type(exc).__name__}")

    # -- the Media Stream ------------------------------------------------

    async def send(self, build: Callable[[int], str], *, numbered: bool = True) -> None:
        """Send one frame; a closed socket ends the call instead of raising."""
        assert self.ws is not None
        async with self.lock:
            if numbered:
                self.seq += 1
            try:
                await self.ws.send_message(build(self.seq))
            except trio_websocket.ConnectionClosed as exc:
                self.server_closed(exc.reason)

    async def tick(self) -> None:
        """Play the buffer up to now and echo the marks that became due."""
        now = self.now_ms()
        progress = self.buffer.advance(now)
        sid = self.r.stream_sid
        for name in progress.marks:
            if self.hung_up or self.closed:
                break
            await self.send(partial(emu.build_mark_echo, stream_sid=sid, name=name))
            self.r.marks_echoed += 1
            self.events.add(now, "to_server", "mark", name=name)

    async def sender(self, custom_parameters: dict[str, str]) -> None:
        r, sid = self.r, self.r.stream_sid
        await self.send(lambda seq: emu.build_connected(), numbered=False)  # no sequenceNumber
        self.events.add(0.0, "to_server", "connected")
        await self.send(lambda seq: emu.build_start(seq, sid, r.account_sid, r.call_sid, custom_parameters))
        # The stream token /voice minted is a credential (briefly): not in the report.
        shown = {k: "(redacted)" if k == stream_token.PARAMETER else v for k, v in custom_parameters.items()}
        self.events.add(0.0, "to_server", "start", stream_sid=sid, custom_parameters=shown)
        frames = math.ceil(len(r.caller_ulaw) / p.FRAME_BYTES)
        total_ms = frames * p.FRAME_MS
        # One schedule of (audio ms, order, what): frame n leaves once its 20 ms
        # have been "spoken", at (n + 1) * 20 ms; digits at their own times.
        schedule: list[tuple[float, int, int | str]] = [((n + 1) * p.FRAME_MS, 1, n) for n in range(frames)]
        schedule += [(t * 1000, 0, digit) for t, digit in self.opts.dtmf if t * 1000 <= total_ms]
        schedule.sort(key=lambda item: (item[0], item[1]))
        step = 1 / (1000 * self.opts.speed)
        for due_ms, _, what in schedule:
            await trio.sleep_until(self.t0 + due_ms * step)  # absolute deadline: no drift
            await self.tick()
            if isinstance(what, str):
                await self.send(partial(emu.build_dtmf, stream_sid=sid, digit=what))
                self.events.add(due_ms, "to_server", "dtmf", digit=what)
                continue
            chunk = r.caller_ulaw[what * p.FRAME_BYTES : (what + 1) * p.FRAME_BYTES].ljust(p.FRAME_BYTES, b"\xff")
            await self.send(partial(emu.build_inbound_media, stream_sid=sid, chunk=what + 1,
                                    timestamp_ms=what * p.FRAME_MS, ulaw=chunk))
            r.frames_sent += 1
            self.events.media(due_ms, "to_server", p.FRAME_BYTES)
            if self.on_progress is not None:
                self.on_progress(due_ms, total_ms)
        self.hung_up = True
        await self.send(lambda seq: emu.build_stop(seq, sid, r.account_sid, r.call_sid))
        # The call's timeline ends with the last frame's audio (stop leaves then).
        self.r.call_ms = r.frames_sent * p.FRAME_MS
        self.events.add(self.r.call_ms, "to_server", "stop")
        self.end(Outcome.COMPLETED, "the caller hung up after the audio and tail")

    async def receiver(self) -> None:
        assert self.ws is not None
        while True:
            try:
                message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                self.server_closed(exc.reason)
                return
            if self.hung_up:
                continue  # Twilio ignores what arrives after its stop
            now = self.now_ms()
            try:
                ev = emu.parse_from_bridge(message, self.r.stream_sid)
            except p.RemoteProtocolError as exc:
                self.error(str(exc))
                continue
            if isinstance(ev, p.OutMedia):
                self.r.frames_received += 1
                self.buffer.enqueue_media(now, ev.payload)
                self.events.media(now, "from_server", len(ev.payload))
            elif isinstance(ev, p.OutMark):
                self.r.marks_received += 1
                self.buffer.enqueue_mark(now, ev.name)
                self.events.add(now, "from_server", "mark", name=ev.name)
            else:
                dropped = self.buffer.clear(now)
                self.r.clears.append(now)
                self.events.add(now, "from_server", "clear", dropped_ms=round(dropped))
            await self.tick()

    def server_closed(self, reason: trio_websocket.CloseReason | None) -> None:
        """The bridge closed the socket first: the call ends (Twilio would run
        the verb after ``</Connect>``).  Idempotent; ignored after our stop."""
        if self.hung_up or self.closed:
            return
        self.closed = True
        self.sender_scope.cancel()
        code = reason.code if reason else 1006
        why = (reason.reason if reason else "") or ""
        now = self.now_ms()
        self.r.call_ms = now
        self.events.add(now, "from_server", "close", code=code, reason=why)
        if code in (1000, 1001):
            self.end(Outcome.SERVER_CLOSED, f"the server closed the stream ({code}) at {now / 1000:.2f} s")
        else:
            self.end(Outcome.ABNORMAL_CLOSE, f"the server closed the stream abnormally ({code} {why})".strip())

    async def stream(self, http: httpx.AsyncClient, plan: TwimlPlan) -> None:
        assert plan.stream is not None
        st = plan.stream
        host_header, host, port, tls, resource = _ws_target(st.url, self.server)
        headers = [(b"X-Twilio-Signature", sign(self.token, st.url, {}).encode())]
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                tcp = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as exc:
            self.end(Outcome.REFUSED, f"31901: cannot connect to {host}:{port}: {exc or 'timeout'}")
            return
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tcp
        if tls:
            stream = trio.SSLStream(tcp, ssl.create_default_context(), server_hostname=host)
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    # A rejection surfaces from the reader task, i.e. via the nursery.
                    ws = await trio_websocket.wrap_client_stream(
                        nursery, stream, host_header, resource, extra_headers=headers)
                await self.run_stream(nursery, http, ws, stream, st)
        except* trio_websocket.ConnectionRejected as group:
            status = getattr(group.exceptions[0], "status_code", "?")
            self.end(Outcome.REFUSED, f"31920: websocket upgrade rejected with HTTP {status}")
        except* (trio_websocket.HandshakeError, trio.TooSlowError, OSError, trio.BrokenResourceError) as group:
            if self.ws is not None:
                raise  # not a handshake problem: a bug, keep the traceback
            first = group.exceptions[0]
            self.end(Outcome.REFUSED, f"31920: websocket handshake failed: {first or type(first).__name__}")
        finally:
            await trio.aclose_forcefully(stream)

    async def run_stream(self, nursery: trio.Nursery, http: httpx.AsyncClient,
                         ws: trio_websocket.WebSocketConnection, stream: trio.abc.Stream, st: StreamVerb) -> None:
        """The stream's life, top to bottom: status callback, sender + receiver, close."""
        self.ws = ws
        self.t0 = trio.current_time()  # the audio timeline starts with the stream
        if st.status_callback:
            nursery.start_soon(self.status_callback, http, st.status_callback, "stream-started")
        interrupted = True
        try:
            with self.sender_scope:
                nursery.start_soon(self.receiver)
                await self.sender(dict(st.parameters))
            interrupted = False
        finally:
            self.hung_up = True
            if not interrupted:
                # A clean close handshake.  Not when cancelled (timeout): the
                # websocket's reader task is cancelled too and could never see
                # the peer's close frame, so the wait would only burn the bound.
                with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                    await ws.aclose(1000)
            await trio.aclose_forcefully(stream)  # ends trio-websocket's reader task
        if st.status_callback:
            nursery.start_soon(self.status_callback, http, st.status_callback, "stream-stopped")


async def simulate_call(
    server: str,
    auth_token: str,
    caller_ulaw: bytes,
    options: CallOptions | None = None,
    *,
    on_progress: Callable[[float, float], None] | None = None,
) -> CallResult:
    """Place one simulated Twilio call to the bridge at ``server``.

    Args:
        server: the bridge's base URL as reachable from here, e.g.
            ``http://127.0.0.1:8080``.
        auth_token: the Twilio auth token the bridge validates against.
        caller_ulaw: 8 kHz μ-law caller audio (see :mod:`.wavio`).
        options: numbers, DTMF, tail, speed, timeout.
        on_progress: called with ``(sent_ms, total_ms)`` after each frame.

    Returns:
        The call record.  Misbehaviour of the bridge is *recorded*
        (``outcome``, ``protocol_errors``), never raised.
    """
    opts = options or CallOptions()
    if opts.speed <= 0:
        raise ValueError("speed must be > 0")
    for _, digit in opts.dtmf:
        if digit not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF digit: {digit!r}")
    call = _Call(server, auth_token, caller_ulaw, opts, on_progress)
    total_s = len(call.r.caller_ulaw) / 8000
    timeout = opts.timeout_s or total_s / opts.speed + VOICE_TIMEOUT_S + CONNECT_TIMEOUT_S + TIMEOUT_MARGIN_S
    log.info("simulate.call", call_sid=call.r.call_sid, server=server, audio_s=round(total_s, 2), speed=opts.speed)
    with trio.move_on_after(timeout) as scope:
        async with httpx.AsyncClient() as http:
            plan = await call.fetch_twiml(http)
            if plan is not None:
                for verb in plan.before:
                    call.events.add(0.0, "from_server", verb.kind, text=verb.text)
                if plan.stream is None:
                    kinds = ", ".join(f"<{v.kind.capitalize()}>" for v in plan.before) or "nothing"
                    call.end(Outcome.NO_STREAM, f"the server answered without <Connect><Stream>: {kinds}")
                else:
                    await call.stream(http, plan)
                    if call.r.outcome in (Outcome.SERVER_CLOSED, Outcome.ABNORMAL_CLOSE):
                        for verb in plan.after:  # Twilio moves on to the next verb
                            call.events.add(call.r.call_ms, "from_server", verb.kind, text=verb.text)
    if scope.cancelled_caught:
        call.r.call_ms = call.r.call_ms or call.now_ms()
        call.r.outcome, call.r.detail = Outcome.TIMEOUT, f"the call did not finish within {timeout:.0f} s"
        call.events.add(call.r.call_ms, "to_server", "timeout")
    r = call.r
    r.call_ms = r.call_ms or r.frames_sent * p.FRAME_MS
    r.heard_ulaw = call.buffer.heard_ulaw(r.call_ms)
    r.played_intervals = [(s, min(e, r.call_ms)) for s, e in call.buffer.played_intervals() if s < r.call_ms]
    if call.buffer.overflow_ms or call.buffer.overflow_marks:
        r.protocol_errors.append(
            f"outbound buffer overflow: {call.buffer.overflow_ms:.0f} ms of audio and "
            f"{call.buffer.overflow_marks} marks dropped (the bridge sent far ahead of real time)")
    r.events = call.events.as_list()
    log.info("simulate.done", call_sid=r.call_sid, outcome=r.outcome.value, errors=len(r.protocol_errors))
    return r
