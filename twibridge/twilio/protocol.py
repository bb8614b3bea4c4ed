"""Twilio Media Streams messages, sans-IO (in the manner of h11/wsproto).

Every Media Streams frame is a JSON text frame.  This module turns text into
small frozen event dataclasses and events back into text:

* the *bridge* role (our server): :func:`parse_from_twilio` reads what Twilio
  sends (``connected``, ``start``, ``media``, ``dtmf``, ``mark``, ``stop``) and
  :func:`build_media` / :func:`build_mark` / :func:`build_clear` write what
  the bridge may send back;
* the *Twilio* role (``simulate-call``, tests, bench) lives beside it in
  :mod:`twibridge.twilio.emulation`: what Twilio sends, and a check of what a
  bridge sends, made the way Twilio makes it.

:class:`StreamState` checks event order (connected → start → media… → stop).

Two error types, as in h11: :class:`RemoteProtocolError` means the peer sent
something that breaks the protocol (log a warning, end that one call);
:class:`LocalProtocolError` means *we* tried to do something illegal, which is
a bug and deserves a traceback.

Numbers that Twilio sends as JSON strings (``sequenceNumber``, ``chunk``,
``timestamp``) are converted to ``int`` here, once, so nothing downstream
ever compares a string with a number.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

#: μ-law 8 kHz: 8 bytes per millisecond, 160 bytes per 20 ms frame.
BYTES_PER_MS = 8
FRAME_MS = 20
FRAME_BYTES = FRAME_MS * BYTES_PER_MS
#: Hard cap on one inbound text frame.  A media frame is ~350 bytes; ``start``
#: with custom parameters a few KiB.  Anything bigger is hostile or broken.
MAX_MESSAGE_BYTES = 64 * 1024


class ProtocolError(Exception):
    """Base class of Media Streams protocol errors."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that breaks the Media Streams protocol.

    Expected in the wild (bad proxies, fuzzers, bugs at the peer): the call
    concerned logs a warning and ends; no traceback is owed.
    """


class LocalProtocolError(ProtocolError):
    """We tried to send or accept something the protocol forbids: our bug."""


# --------------------------------------------------------------------------
# Events Twilio sends to the bridge
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    custom_parameters: Mapping[str, str]
    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class Media:
    sequence_number: int
    stream_sid: str
    track: str
    chunk: int
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence_number: int
    stream_sid: str
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    """Twilio's echo of a mark we sent: all audio queued before it has played."""

    sequence_number: int
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """An event name we do not know: logged and ignored, never fatal."""

    event: str


TwilioEvent = Connected | Start | Media | Dtmf | Mark | Stop | Unknown


# --------------------------------------------------------------------------
# Events the bridge sends to Twilio
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutMedia:
    stream_sid: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutMark:
    stream_sid: str
    name: str


@dataclass(frozen=True, slots=True)
class OutClear:
    stream_sid: str


BridgeEvent = OutMedia | OutMark | OutClear


# --------------------------------------------------------------------------
# Field helpers: every failure becomes one RemoteProtocolError with a reason
# --------------------------------------------------------------------------


def _obj(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = d.get(key)
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"field {key!r} must be an object")
    return value


def _str(d: Mapping[str, Any], key: str, *, max_len: int = 256) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise RemoteProtocolError(f"field {key!r} must be a string")
    if len(value) > max_len:
        raise RemoteProtocolError(f"field {key!r} is too long ({len(value)} chars)")
    return value


def _intstr(d: Mapping[str, Any], key: str) -> int:
    """Twilio sends counters as decimal strings; accept ints too, leniently."""
    value = d.get(key)
    if isinstance(value, bool):
        raise RemoteProtocolError(f"field {key!r} must be a number, got a boolean")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        n = int(value)
    else:
        raise RemoteProtocolError(f"field {key!r} must be a decimal number string, got {value!r:.40}")
    if n < 0:
        raise RemoteProtocolError(f"field {key!r} must not be negative")
    return n


def _b64(value: str, key: str = "payload") -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RemoteProtocolError(f"field {key!r} is not valid base64") from None


def _load(text: str | bytes) -> dict[str, Any]:
    if isinstance(text, (bytes, bytearray, memoryview)):
        raise RemoteProtocolError("binary frame: Media Streams frames are JSON text")
    if len(text) > MAX_MESSAGE_BYTES:
        raise RemoteProtocolError(f"message too large ({len(text)} chars, cap {MAX_MESSAGE_BYTES})")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise RemoteProtocolError("malformed JSON") from None
    if not isinstance(data, dict):
        raise RemoteProtocolError("message is not a JSON object")
    return data


# --------------------------------------------------------------------------
# Bridge role: parse what Twilio sends, build what the bridge sends
# --------------------------------------------------------------------------


def _media_fast(d: dict[str, Any]) -> Media | None:
    """A well-formed Twilio media frame, checked in one pass; None sends it to the full checks.

    50 of these arrive per second per call, so the common shape (every
    counter a decimal string, a valid 160-byte payload) is checked with the
    fewest calls; anything unusual returns None and :func:`parse_from_twilio`
    runs the field-by-field checks, which name the first bad field.
    """
    m = d.get("media")
    if type(m) is not dict:
        return None
    seq, sid = d.get("sequenceNumber"), d.get("streamSid")
    chunk, timestamp, payload = m.get("chunk"), m.get("timestamp"), m.get("payload")
    if not (type(seq) is str and type(chunk) is str and type(timestamp) is str and type(sid) is str
            and type(payload) is str):
        return None
    if not (seq and chunk and timestamp and len(seq) <= 18 and len(chunk) <= 18 and len(timestamp) <= 18
            and len(sid) <= 256):
        return None
    digits = seq + chunk + timestamp
    if not (digits.isascii() and digits.isdigit()):
        return None
    try:
        audio = binascii.a2b_base64(payload, strict_mode=True)  # what b64decode(validate=True) runs
    except (binascii.Error, ValueError):
        return None
    if len(audio) != FRAME_BYTES:
        return None
    track = m.get("track", "inbound")
    return Media(sequence_number=int(seq), stream_sid=sid, track=track if type(track) is str else "inbound",
                 chunk=int(chunk), timestamp=int(timestamp), payload=audio)


def parse_from_twilio(text: str | bytes) -> TwilioEvent:
    """Parse one frame from Twilio.

    Raises:
        RemoteProtocolError: binary frame, bad JSON, missing or mistyped
            fields, bad base64, or a media payload that is not whole μ-law.
    """
    d = _load(text)
    event = d.get("event")
    if event == "media":
        fast = _media_fast(d)
        if fast is not None:
            return fast
    if not isinstance(event, str):
        raise RemoteProtocolError("field 'event' must be a string")
    if event == "media":
        seq, sid, m = _intstr(d, "sequenceNumber"), _str(d, "streamSid"), _obj(d, "media")
        chunk, timestamp = _intstr(m, "chunk"), _intstr(m, "timestamp")
        payload = _b64(_str(m, "payload", max_len=MAX_MESSAGE_BYTES))
        if len(payload) != FRAME_BYTES:
            # Twilio sends 20 ms frames of 160 bytes; anything else is not Twilio.
            raise RemoteProtocolError(f"media payload must be {FRAME_BYTES} bytes, got {len(payload)}")
        track = m.get("track", "inbound")
        return Media(sequence_number=seq, stream_sid=sid, track=track if isinstance(track, str) else "inbound",
                     chunk=chunk, timestamp=timestamp, payload=payload)
    if event == "mark":
        return Mark(
            sequence_number=_intstr(d, "sequenceNumber"),
            stream_sid=_str(d, "streamSid"),
            name=_str(_obj(d, "mark"), "name"),
        )
    if event == "start":
        s = _obj(d, "start")
        fmt = s.get("mediaFormat") or {}
        if not isinstance(fmt, dict):
            raise RemoteProtocolError("field 'mediaFormat' must be an object")
        params = s.get("customParameters") or {}
        if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in params.items()
        ):
            raise RemoteProtocolError("field 'customParameters' must map strings to strings")
        tracks = s.get("tracks") or ["inbound"]
        if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
            raise RemoteProtocolError("field 'tracks' must be a list of strings")
        rate = fmt.get("sampleRate", 8000)
        channels = fmt.get("channels", 1)
        if not isinstance(rate, int) or not isinstance(channels, int):
            raise RemoteProtocolError("mediaFormat sampleRate/channels must be numbers")
        return Start(
            sequence_number=_intstr(d, "sequenceNumber"),
            stream_sid=_str(d, "streamSid"),
            account_sid=_str(s, "accountSid"),
            call_sid=_str(s, "callSid"),
            tracks=tuple(tracks),
            custom_parameters=dict(params),
            encoding=str(fmt.get("encoding", "audio/x-mulaw")),
            sample_rate=rate,
            channels=channels,
        )
    if event == "connected":
        return Connected(protocol=str(d.get("protocol", "")), version=str(d.get("version", "")))
    if event == "dtmf":
        digit = _str(_obj(d, "dtmf"), "digit", max_len=4)
        return Dtmf(sequence_number=_intstr(d, "sequenceNumber"), stream_sid=_str(d, "streamSid"), digit=digit)
    if event == "stop":
        stop = d.get("stop")
        info: Mapping[str, Any] = stop if isinstance(stop, dict) else {}
        return Stop(
            sequence_number=_intstr(d, "sequenceNumber"),
            stream_sid=_str(d, "streamSid"),
            account_sid=str(info.get("accountSid", "")),
            call_sid=str(info.get("callSid", "")),
        )
    return Unknown(event=event[:64])


def build_media(stream_sid: str, ulaw: bytes) -> str:
    """Outbound audio.  An f-string template: ``json.dumps`` costs ~30× more
    per frame and SIDs/base64 never need escaping (checked by the caller's
    SID validation and base64's alphabet)."""
    payload = base64.b64encode(ulaw).decode("ascii")
    return f'{{"event":"media","streamSid":"{stream_sid}","media":{{"payload":"{payload}"}}}}'


def build_mark(stream_sid: str, name: str) -> str:
    """A mark after each outbound chunk.  Our names (``g0:3:4200``) and SIDs need
    no escaping, so the common case is a template; anything else goes through
    ``json.dumps`` (same text, ~10x slower)."""
    if _plain(name) and _plain(stream_sid):
        return f'{{"event":"mark","streamSid":"{stream_sid}","mark":{{"name":"{name}"}}}}'
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}, separators=(",", ":"))


def _plain(s: str) -> bool:
    """True when ``json.dumps`` would write ``s`` unchanged between its quotes."""
    return s.isascii() and s.isprintable() and '"' not in s and "\\" not in s


def build_clear(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid}, separators=(",", ":"))


# --------------------------------------------------------------------------
# Event order
# --------------------------------------------------------------------------


class Phase(enum.Enum):
    AWAIT_CONNECTED = "await-connected"
    AWAIT_START = "await-start"
    STREAMING = "streaming"
    STOPPED = "stopped"


@dataclass
class StreamState:
    """Event order for one stream, as a tiny explicit state machine.

    Rules: ``connected`` is optional but, when present, comes first;
    ``start`` comes exactly once before any ``media``/``dtmf``/``mark``/
    ``stop``; every later event carries the ``streamSid`` of ``start``;
    nothing follows ``stop``.  Unknown events are allowed anywhere (Twilio
    may add events; we log and ignore them).
    """

    phase: Phase = Phase.AWAIT_CONNECTED
    stream_sid: str | None = None
    events: int = field(default=0)

    def receive(self, ev: TwilioEvent) -> TwilioEvent:
        """Check ``ev`` against the order rules and advance; return it."""
        self.events += 1
        if isinstance(ev, Unknown):
            return ev
        if self.phase is Phase.STOPPED:
            raise RemoteProtocolError(f"{type(ev).__name__.lower()} after stop")
        if isinstance(ev, Connected):
            if self.phase is not Phase.AWAIT_CONNECTED:
                raise RemoteProtocolError("connected sent twice or after start")
            self.phase = Phase.AWAIT_START
            return ev
        if isinstance(ev, Start):
            if self.phase is Phase.STREAMING:
                raise RemoteProtocolError("start sent twice")
            if ev.encoding != "audio/x-mulaw" or ev.sample_rate != 8000 or ev.channels != 1:
                raise RemoteProtocolError(
                    f"unsupported media format {ev.encoding} {ev.sample_rate} Hz x{ev.channels}"
                )
            if not (ev.stream_sid and _plain(ev.stream_sid)):
                # SIDs are ASCII letters and digits; ours go into JSON templates unescaped.
                raise RemoteProtocolError(f"streamSid {ev.stream_sid!r:.40} is not a SID")
            self.phase = Phase.STREAMING
            self.stream_sid = ev.stream_sid
            return ev
        if self.phase is not Phase.STREAMING:
            raise RemoteProtocolError(f"{type(ev).__name__.lower()} before start")
        sid = getattr(ev, "stream_sid", None)
        if sid != self.stream_sid:
            raise RemoteProtocolError(f"streamSid {sid!r:.40} does not match the stream's")
        if isinstance(ev, Stop):
            self.phase = Phase.STOPPED
        return ev
