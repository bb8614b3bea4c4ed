"""What Twilio sends to ``POST /voice`` and how it reads the TwiML back (sans-IO).

The simulator understands only the verbs a Media Streams bridge answers
with: ``<Connect><Stream>`` (with ``<Parameter>``s), ``<Say>``, ``<Dial>``
and ``<Hangup>``.  Anything else is refused with a message naming the verb,
because silently skipping it would make a bridge look fine here and fail on
a real line.  Problems Twilio would only *warn* about (a ``ws://`` or
query-string stream URL: 31922) do not stop the call; they are returned as
``warnings`` and end up in the report's ``protocol_errors``.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from twilio.request_validator import RequestValidator

#: Twilio rejects TwiML documents over 64 KB.
MAX_TWIML_BYTES = 64 * 1024
SUPPORTED = "<Connect><Stream>, <Say>, <Dial>, <Hangup>"


class TwimlError(Exception):
    """The server answered TwiML the simulator cannot (or Twilio would not) run."""


@dataclass(frozen=True, slots=True)
class Verb:
    """A verb other than ``<Connect>``: ``say``, ``dial`` or ``hangup``."""

    kind: str
    text: str = ""


@dataclass(frozen=True, slots=True)
class StreamVerb:
    url: str
    name: str = ""
    status_callback: str = ""
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TwimlPlan:
    """The TwiML, in order: verbs before the stream, the stream, verbs after.

    ``after`` runs only if the *server* ends the stream (Twilio then moves
    to the next verb); when the caller hangs up nothing more runs.
    ``stream`` is None when the server answered without ``<Connect>``
    (e.g. a busy ``<Say>…<Hangup/>``).
    """

    before: tuple[Verb, ...]
    stream: StreamVerb | None
    after: tuple[Verb, ...]
    warnings: tuple[str, ...] = ()


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits (34 characters)."""
    return prefix + secrets.token_hex(16)


def voice_params(call_sid: str, account_sid: str, from_number: str, to_number: str) -> dict[str, str]:
    """The form fields of Twilio's inbound-call webhook (the common ones)."""
    return {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": to_number,
        "CalledCountry": "US",
        "Caller": from_number,
        "CallerCountry": "US",
        "Direction": "inbound",
        "From": from_number,
        "FromCountry": "US",
        "To": to_number,
        "ToCountry": "US",
    }


def sign(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature`` for ``url`` (exactly as requested) and form ``params``."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _verb(el: ET.Element) -> Verb:
    tag = _local(el.tag)
    if tag == "Say":
        return Verb("say", (el.text or "").strip())
    if tag == "Hangup":
        return Verb("hangup")
    if tag == "Dial":
        number = (el.text or "").strip() or " ".join(
            (child.text or "").strip() for child in el if _local(child.tag) in ("Number", "Sip", "Client")
        )
        return Verb("dial", number)
    if tag == "Start":
        raise TwimlError(
            "<Start><Stream> is a one-way (fork) stream and cannot carry the agent's voice; "
            "a bridge must answer <Connect><Stream>"
        )
    raise TwimlError(f"unsupported TwiML verb <{tag}>: simulate-call understands {SUPPORTED}")


def _stream(connect: ET.Element, allow_ws: bool) -> tuple[StreamVerb, list[str]]:
    children = list(connect)
    if len(children) != 1 or _local(children[0].tag) != "Stream":
        inside = ", ".join(f"<{_local(c.tag)}>" for c in children) or "nothing"
        raise TwimlError(f"<Connect> must hold exactly one <Stream>, got {inside}")
    el = children[0]
    url = (el.get("url") or "").strip()
    if not url:
        raise TwimlError("<Stream> has no url attribute")
    parts = urlsplit(url)
    if parts.scheme not in ("wss", "ws") or not parts.hostname:
        raise TwimlError(f"<Stream url> must be an absolute wss:// URL, got {url!r}")
    warnings = []
    if parts.scheme != "wss" and not allow_ws:
        warnings.append(f"31922: stream URL must use wss://, got {url!r}")
    if parts.query or parts.fragment:
        warnings.append(f"31922: stream URL must not have a query string or fragment, got {url!r}")
    if el.get("track") not in (None, "inbound_track"):
        warnings.append(f"31941: <Connect><Stream> allows only track=inbound_track, got {el.get('track')!r}")
    params: dict[str, str] = {}
    for child in el:
        if _local(child.tag) != "Parameter":
            raise TwimlError(f"<Stream> may hold only <Parameter>, got <{_local(child.tag)}>")
        name = child.get("name")
        if not name:
            raise TwimlError("<Parameter> without a name")
        params[name] = child.get("value", "")
    stream = StreamVerb(url, el.get("name", ""), el.get("statusCallback", ""), params)
    return stream, warnings


def parse_twiml(text: str | bytes, *, allow_ws: bool = False) -> TwimlPlan:
    """Read a ``/voice`` answer the way Twilio would, or refuse it.

    Args:
        allow_ws: accept a ``ws://`` stream URL without a warning.  Right
            for a plain-``http://`` webhook (local development): such a
            server gets no TLS, so ``ws://`` is consistent; behind
            ``https://`` a ``ws://`` URL is the bug Twilio reports as 31922.

    Raises:
        TwimlError: not XML, not ``<Response>``, an unsupported verb, a
            malformed ``<Connect><Stream>``, or more than one ``<Connect>``.
    """
    if len(text) > MAX_TWIML_BYTES:
        raise TwimlError(f"TwiML is {len(text)} bytes, over Twilio's {MAX_TWIML_BYTES} limit")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise TwimlError(f"not valid XML: {exc}") from None
    if _local(root.tag) != "Response":
        raise TwimlError(f"root element must be <Response>, got <{_local(root.tag)}>")
    before: list[Verb] = []
    after: list[Verb] = []
    stream: StreamVerb | None = None
    warnings: list[str] = []
    for el in root:
        if _local(el.tag) == "Connect":
            if stream is not None:
                raise TwimlError("more than one <Connect>")
            stream, warnings = _stream(el, allow_ws)
            continue
        verb = _verb(el)
        (after if stream is not None else before).append(verb)
        if verb.kind in ("hangup", "dial"):
            # Nothing runs after <Hangup>; after <Dial> the caller talks to
            # someone else, which a simulation cannot follow.
            break
    return TwimlPlan(tuple(before), stream, tuple(after), tuple(warnings))


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) with ws→http and wss→https: a Stream URL and its webhook share one."""
    u = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(u.scheme.lower(), u.scheme.lower())
    return scheme, (u.hostname or "").lower(), u.port or (443 if scheme == "https" else 80)


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def signable(url: str, signed_webhook: str) -> bool:
    """May we sign ``url`` (a Stream or statusCallback the server named)?

    Only on the origin of the webhook we signed ourselves.  A server that
    names another origin is asking us for a valid signature on someone else's
    URL (e.g. the production ``wss://`` upgrade, one value per deployment).
    """
    return origin(url) == origin(signed_webhook)
