"""Twilio REST call control on Trio: hang up, transfer, place an outbound call, read its status.

Why not ``twilio.rest``: its sync client has no timeout by default and would
need a worker thread, its async client is aiohttp (asyncio-only), and it
costs ~125 ms to import.  These operations are one form POST (or GET) each
(twilio-media-streams.md §7), so they go through ``httpx.AsyncClient`` (which
runs on Trio) with basic auth, against ``[twilio] api_base_url`` (tests
point it at a fake) and bounded by ``[twilio] rest_timeout_s``.  TwiML is
still built with twilio's ``VoiceResponse`` (cheap to import, escapes).

Every failure is one :class:`TwilioRestError` carrying Twilio's HTTP status
and error code — never the auth token.  Hanging up a call that already ended
(404 / 20404) is success: the goal, a finished call, holds.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import httpx
import trio
from twilio.twiml.voice_response import VoiceResponse

from twibridge.config import Config
from twibridge.logs import get_logger

log = get_logger("twibridge.twilio.rest")

API_VERSION = "2010-04-01"
#: Twilio's "resource not found": the call ended (or never existed in this account).
NOT_FOUND_CODE = 20404
#: Longest Twilio error text we keep (it goes into logs and CLI output).
MAX_MESSAGE_CHARS = 300
DEFAULT_STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")

_CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


class TwilioRestError(Exception):
    """A Twilio REST operation failed.

    ``status`` is the HTTP status (None: no reply — timeout, network, or a
    request refused locally before sending); ``code`` is Twilio's error code
    when it gave one (e.g. 20404, 21211 invalid 'To', 20003 bad credentials).
    """

    def __init__(self, message: str, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    @property
    def not_found(self) -> bool:
        """The call does not exist (any more): it ended, or the SID is wrong."""
        return self.status == 404 or self.code == NOT_FOUND_CODE

    @property
    def retryable(self) -> bool:
        """No reply, rate-limited or a Twilio-side error: trying later may work."""
        return self.status is None or self.status == 429 or self.status >= 500


def transfer_twiml(to: str, say: str | None = None) -> str:
    """``<Say>`` (optional) then ``<Dial><Number>to</Number></Dial>``."""
    vr = VoiceResponse()
    if say:
        vr.say(say)
    vr.dial().number(to)
    return str(vr)


def check_number(number: str, what: str = "number") -> str:
    """An E.164 number (``+15551234567``), stripped; else :class:`TwilioRestError`."""
    number = number.strip()
    if not _E164.match(number):
        raise TwilioRestError(f"{what}: expected an E.164 number like +15551234567, got {number[:32]!r}")
    return number


class TwilioRest:
    """The call-control operations the bridge needs, on Trio.

    Each operation opens its own short-lived client: they are rare (one or
    two per call) and a shared pool would have to be closed by someone.
    """

    def __init__(self, config: Config, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        tw = config.twilio
        self.account_sid = tw.account_sid
        self._auth = (tw.account_sid, tw.auth_token.get_secret_value())
        self.base_url = tw.api_base_url.rstrip("/")
        self.timeout_s = tw.rest_timeout_s
        self._transport = transport

    def problems(self) -> list[str]:
        """What keeps this client from working (empty when configured)."""
        out = []
        if not self.account_sid:
            out.append("twilio.account_sid: required for Twilio REST calls (env TWIBRIDGE_TWILIO_ACCOUNT_SID)")
        elif not _ACCOUNT_SID.match(self.account_sid):
            out.append("twilio.account_sid: expected AC followed by 32 hex digits")
        if not self._auth[1]:
            out.append("twilio.auth_token: required for Twilio REST calls (env TWIBRIDGE_TWILIO_AUTH_TOKEN)")
        return out

    # -- operations --------------------------------------------------------------

    async def hangup(self, call_sid: str, account_sid: str | None = None) -> bool:
        """End a live call (``Status=completed``).

        Returns True when this request ended it, False when it had already
        ended (404 / 20404 — treated as success).

        Raises:
            TwilioRestError: anything else (bad credentials, timeout, 5xx…).
        """
        try:
            await self._post(self._call_path(call_sid, account_sid), {"Status": "completed"})
        except TwilioRestError as exc:
            if exc.not_found:
                log.info("twilio.hangup_already_ended", call_sid=call_sid)
                return False
            raise
        log.info("twilio.hangup", call_sid=call_sid)
        return True

    async def transfer(self, call_sid: str, to: str, say: str | None = None,
                       account_sid: str | None = None) -> None:
        """Replace the call's TwiML with ``<Say>`` + ``<Dial><Number>``.

        This ends the Media Stream (Twilio sends ``stop``): the call runner
        must record the outcome as a transfer *before* and must not hang up.

        Raises:
            TwilioRestError: bad number, call gone (``not_found``), or any failure.
        """
        number = check_number(to, "transfer target")
        await self._post(self._call_path(call_sid, account_sid), {"Twiml": transfer_twiml(number, say)})
        log.info("twilio.transfer", call_sid=call_sid, to=number)

    async def update_twiml(self, call_sid: str, twiml: str, account_sid: str | None = None) -> None:
        """Replace a live call's TwiML (e.g. the fallback ``<Say>``/``<Dial>``).

        Like :meth:`transfer`, this ends the Media Stream.

        Raises:
            TwilioRestError: call gone (``not_found``), or any failure.
        """
        await self._post(self._call_path(call_sid, account_sid), {"Twiml": twiml})
        log.info("twilio.twiml_updated", call_sid=call_sid)

    async def create_call(
        self,
        to: str,
        from_: str,
        *,
        url: str | None = None,
        twiml: str | None = None,
        status_callback: str | None = None,
        status_callback_events: Iterable[str] = DEFAULT_STATUS_EVENTS,
        ring_timeout_s: int | None = None,
        time_limit_s: int | None = None,
        machine_detection: bool = False,
        detect_message_end: bool = True,
        machine_detection_timeout_s: int | None = None,
    ) -> str:
        """Place an outbound call whose answer fetches TwiML from ``url`` (POST),
        or runs ``twiml`` (exactly one of the two).

        ``machine_detection``: Twilio's answering-machine detection;
        ``detect_message_end`` waits for a greeting's beep (a voicemail is
        left after it), otherwise Twilio answers as soon as it can tell
        (``Enable``: a warm transfer only needs to know *whether* a person
        answered).  Returns the new CallSid.

        Raises:
            TwilioRestError: bad numbers, refused (e.g. unverified From), or any failure.
        """
        if (url is None) == (twiml is None):
            raise TwilioRestError("create_call: give exactly one of url and twiml")
        form: dict[str, str | list[str]] = {"To": check_number(to, "to"), "From": check_number(from_, "from")}
        if url is not None:
            form.update(Url=url, Method="POST")
        else:
            form["Twiml"] = twiml  # type: ignore[assignment]  # not None: checked above
        if status_callback:
            form.update(StatusCallback=status_callback, StatusCallbackMethod="POST",
                        StatusCallbackEvent=list(status_callback_events))
        if ring_timeout_s is not None:
            form["Timeout"] = str(int(ring_timeout_s))
        if time_limit_s is not None:
            form["TimeLimit"] = str(int(time_limit_s))
        if machine_detection:
            # Wait for the greeting's end (the beep) before fetching Url, so a
            # voicemail left from /voice starts after it.
            form["MachineDetection"] = "DetectMessageEnd" if detect_message_end else "Enable"
            if machine_detection_timeout_s is not None:
                form["MachineDetectionTimeout"] = str(int(machine_detection_timeout_s))
        data = await self._post(f"/{API_VERSION}/Accounts/{self._account(None)}/Calls.json", form)
        sid = data.get("sid")
        if not isinstance(sid, str) or not _CALL_SID.match(sid):
            raise TwilioRestError("Twilio accepted the call but its reply has no CallSid", status=201)
        log.info("twilio.call_created", call_sid=sid, to=form["To"])
        return sid

    async def call_status(self, call_sid: str, account_sid: str | None = None) -> tuple[str, str]:
        """A call's ``(status, answered_by)`` from its resource (GET): queued, ringing,
        in-progress, completed, busy, failed, no-answer, canceled; ``answered_by`` is
        "" until answering-machine detection has said.

        Raises:
            TwilioRestError: call unknown (``not_found``), or any failure.
        """
        data = await self._request("GET", self._call_path(call_sid, account_sid), None)
        status, answered_by = data.get("status"), data.get("answered_by")
        return (status if isinstance(status, str) else "",
                answered_by if isinstance(answered_by, str) else "")

    async def end_leg(self, call_sid: str, *, answered: bool, account_sid: str | None = None) -> None:
        """Stop a call we placed: ``canceled`` while it rings (which has no effect once
        it is answered: Twilio's reply then still says ``in-progress``, so it is hung
        up, ``completed``, after all).  A call that already ended counts as done."""
        path = self._call_path(call_sid, account_sid)
        try:
            if not answered:
                data = await self._post(path, {"Status": "canceled"})
                if data.get("status") != "in-progress":
                    return
            await self._post(path, {"Status": "completed"})
        except TwilioRestError as exc:
            if not exc.not_found:
                raise

    # -- plumbing ------------------------------------------------------------------

    def _account(self, account_sid: str | None) -> str:
        sid = account_sid or self.account_sid
        if not _ACCOUNT_SID.match(sid):
            raise TwilioRestError("twilio.account_sid is missing or not an AC… SID")
        return sid

    def _call_path(self, call_sid: str, account_sid: str | None) -> str:
        if not _CALL_SID.match(call_sid):
            raise TwilioRestError(f"not a CallSid: {call_sid[:40]!r}")
        return f"/{API_VERSION}/Accounts/{self._account(account_sid)}/Calls/{call_sid}.json"

    async def _post(self, path: str, form: Mapping[str, str | list[str]]) -> dict[str, Any]:
        return await self._request("POST", path, form)

    async def _request(self, method: str, path: str, form: Mapping[str, str | list[str]] | None) -> dict[str, Any]:
        if not self._auth[1]:
            raise TwilioRestError("twilio.auth_token is not set")
        url = self.base_url + path
        try:
            with trio.fail_after(self.timeout_s):
                async with httpx.AsyncClient(auth=self._auth, timeout=self.timeout_s,
                                             transport=self._transport) as client:
                    resp = await (client.post(url, data=form) if method == "POST" else client.get(url))
        except (trio.TooSlowError, httpx.TimeoutException):
            raise TwilioRestError(f"Twilio REST timed out after {self.timeout_s:g}s") from None
        except httpx.HTTPError as exc:
            raise TwilioRestError(f"Twilio REST unreachable: {exc.__class__.__name__}") from None
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {}
        if resp.status_code >= 400:
            raise _error(resp.status_code, data)
        return data


def _error(status: int, data: Mapping[str, Any]) -> TwilioRestError:
    code = data.get("code")
    message = " ".join(str(data.get("message") or "").split())[:MAX_MESSAGE_CHARS]
    hint = " (check twilio.account_sid / twilio.auth_token)" if status in (401, 403) else ""
    text = f"Twilio REST error HTTP {status}" + (f" code {code}" if code else "") + (f": {message}" if message else "")
    return TwilioRestError(text + hint, status=status, code=code if isinstance(code, int) else None)
