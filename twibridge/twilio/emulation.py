"""Twilio's side of Media Streams, sans-IO: for emulating Twilio, never for serving.

``twibridge simulate-call``, the tests and the bench play Twilio against a
bridge.  They need what Twilio *sends* (``connected``, ``start``, ``media``,
``dtmf``, mark echoes, ``stop``), written exactly as Twilio writes it, and a
check of what a bridge sends back, as strict as Twilio's (its debugger
warnings 31950 for a binary frame and 31951 for anything else wrong).  The
bridge's own role is :mod:`twibridge.twilio.protocol`, which shares the event
types and the field checks used here.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Mapping

from twibridge.twilio.protocol import (
    BridgeEvent, OutClear, OutMark, OutMedia, RemoteProtocolError, _b64, _load, _obj, _str,
)

def _dumps(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def build_connected() -> str:
    return _dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def build_start(
    seq: int, stream_sid: str, account_sid: str, call_sid: str, custom_parameters: Mapping[str, str]
) -> str:
    return _dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": dict(custom_parameters),
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


def build_inbound_media(seq: int, stream_sid: str, chunk: int, timestamp_ms: int, ulaw: bytes) -> str:
    payload = base64.b64encode(ulaw).decode("ascii")
    return (
        f'{{"event":"media","sequenceNumber":"{seq}","streamSid":"{stream_sid}",'
        f'"media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{timestamp_ms}","payload":"{payload}"}}}}'
    )


def build_dtmf(seq: int, stream_sid: str, digit: str) -> str:
    return _dumps(
        {"event": "dtmf", "sequenceNumber": str(seq), "streamSid": stream_sid,
         "dtmf": {"track": "inbound_track", "digit": digit}}
    )


def build_mark_echo(seq: int, stream_sid: str, name: str) -> str:
    return _dumps({"event": "mark", "sequenceNumber": str(seq), "streamSid": stream_sid, "mark": {"name": name}})


def build_stop(seq: int, stream_sid: str, account_sid: str, call_sid: str) -> str:
    return _dumps(
        {"event": "stop", "sequenceNumber": str(seq), "streamSid": stream_sid,
         "stop": {"accountSid": account_sid, "callSid": call_sid}}
    )


def parse_from_bridge(text: str | bytes, stream_sid: str) -> BridgeEvent:
    """Check a bridge's frame as Twilio does.

    Raises:
        RemoteProtocolError: with Twilio's debugger code in the message —
            31950 for a binary frame, 31951 for bad JSON, an unknown event,
            missing/extra fields or a wrong ``streamSid``.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        raise RemoteProtocolError("31950: binary frame (Media Streams accepts JSON text only)")
    try:
        d = _load(text)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"31951: {exc}") from None
    event = d.get("event")
    allowed = {"media": {"event", "streamSid", "media"}, "mark": {"event", "streamSid", "mark"},
               "clear": {"event", "streamSid"}}
    if event not in allowed:
        raise RemoteProtocolError(f"31951: unsupported event {event!r:.40}")
    extra = set(d) - allowed[event]
    if extra:
        raise RemoteProtocolError(f"31951: unexpected fields {sorted(extra)} in {event}")
    if d.get("streamSid") != stream_sid:
        raise RemoteProtocolError(f"31951: wrong streamSid {d.get('streamSid')!r:.40}")
    try:
        if event == "media":
            m = _obj(d, "media")
            if set(m) != {"payload"}:
                raise RemoteProtocolError(f"outbound media must carry only 'payload', got {sorted(m)}")
            return OutMedia(stream_sid, _b64(_str(m, "payload", max_len=1 << 22)))
        if event == "mark":
            return OutMark(stream_sid, _str(_obj(d, "mark"), "name"))
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"31951: {exc}") from None
    return OutClear(stream_sid)
