"""A fake Twilio REST API (Calls create / update / fetch) on 127.0.0.1, and a raw-ASGI server helper.

It answers like api.twilio.com for the operations twibridge uses
(twilio-media-streams.md §7): form POSTs with HTTP basic auth (AccountSid,
AuthToken), JSON replies with Twilio's error shape ``{code, message,
more_info, status}``; 401/20003 for bad credentials, 404/20404 for a call
that is unknown or already ended, 400/21211/21212/21210 for bad numbers.
Every request is recorded (form fields as lists: Twilio repeats keys such
as ``StatusCallbackEvent``).

A call it placed moves only when the test says (:meth:`FakeTwilioRest.advance`):
then, like Twilio, it posts the call's ``StatusCallback`` (for the events the
call subscribed to) signed with ``X-Twilio-Signature`` — computed by
twilio-python's own ``RequestValidator``, not by the code under test.
``Status=canceled`` only affects a queued or ringing call (an answered one
is left in progress, as Twilio does).  A leg whose TwiML holds
``<Dial><Conference>`` is recorded in :attr:`FakeTwilioRest.conferences`
once in progress.

``serve_asgi`` runs any raw ASGI app under Hypercorn on port 0 (raw ASGI, not
Quart: quart-trio's HTTP close bug would leak sockets, stack-notes §1);
:meth:`FakeTwilioRest.running_in_thread` runs it in its own Trio loop for
synchronous tests (the CLI calls ``trio.run`` itself).
"""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
import queue
import re
import secrets
import threading
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator
from urllib.parse import parse_qs

import httpx
import trio
from twilio.request_validator import RequestValidator
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from fakes import Recorder

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
OWNED_NUMBER = "+15550001111"
Asgi = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]],
                 Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]

_CALLS = re.compile(r"^/2010-04-01/Accounts/(?P<ac>[^/]+)/Calls\.json$")
_CALL = re.compile(r"^/2010-04-01/Accounts/(?P<ac>[^/]+)/Calls/(?P<ca>[^/]+)\.json$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


@asynccontextmanager
async def serve_asgi(app: Asgi) -> AsyncIterator[str]:
    """Serve a raw ASGI app on 127.0.0.1 (port 0); yield ``http://127.0.0.1:PORT``."""
    hc = HypercornConfig()
    hc.bind = ["127.0.0.1:0"]
    hc.accesslog = None
    hc.errorlog = None
    hc.graceful_timeout = 1.0
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(app, hc, shutdown_trigger=stop.wait,  # type: ignore[arg-type]
                                                              task_status=task_status, mode="asgi"))
        try:
            yield binds[0]
        finally:
            stop.set()


async def lifespan(receive: Callable[[], Awaitable[dict[str, Any]]],
                   send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """Answer an ASGI lifespan scope: startup complete, then shutdown complete."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


async def read_body(receive: Callable[[], Awaitable[dict[str, Any]]]) -> bytes:
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


async def respond(send: Callable[[dict[str, Any]], Awaitable[None]], status: int, data: Any) -> None:
    payload = json.dumps(data).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def twilio_error(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                    "status": status}


@dataclass
class FakeCall:
    sid: str
    status: str = "in-progress"
    to: str = ""
    from_: str = ""
    twiml: list[str] = field(default_factory=list)
    answered_by: str = ""
    status_callback: str = ""
    events: tuple[str, ...] = ()


@dataclass
class RestRequest:
    method: str
    path: str
    form: dict[str, list[str]]
    authorized: bool
    status: int = 0


class FakeTwilioRest:
    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN,
                 numbers: tuple[str, ...] = (OWNED_NUMBER,)) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.numbers = set(numbers)
        self.calls: dict[str, FakeCall] = {}
        self.requests: list[RestRequest] = []
        self.recorder = Recorder()
        #: Seconds to wait before answering (timeout tests).
        self.delay_s = 0.0
        #: Answer the next request with this (status, body) instead.
        self.fail_next: tuple[int, dict[str, Any]] | None = None
        #: Conference name → the CallSids of the legs in it.
        self.conferences: dict[str, list[str]] = {}
        #: Status callbacks posted: (url, form, the receiver's HTTP status).
        self.callbacks: list[tuple[str, dict[str, str], int]] = []

    def add_call(self, sid: str | None = None) -> str:
        """A live call the bridge may hang up or transfer."""
        sid = sid or "CA" + secrets.token_hex(16)
        self.calls[sid] = FakeCall(sid)
        return sid

    # -- serving ------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        async with serve_asgi(self.app) as url:
            yield url

    @contextmanager
    def running_in_thread(self, timeout: float = 10.0) -> Iterator[str]:
        """Serve from a thread with its own Trio loop (for synchronous tests)."""
        started: queue.Queue[Any] = queue.Queue()
        stop_holder: list[tuple[trio.lowlevel.TrioToken, trio.Event]] = []

        async def main() -> None:
            stop = trio.Event()
            stop_holder.append((trio.lowlevel.current_trio_token(), stop))
            async with self.running() as url:
                started.put(url)
                await stop.wait()

        def thread_main() -> None:
            try:
                trio.run(main)
            except BaseException as exc:  # surface a startup failure to the test
                started.put(exc)

        thread = threading.Thread(target=thread_main, name="fake-twilio-rest", daemon=True)
        thread.start()
        url = started.get(timeout=timeout)
        if isinstance(url, BaseException):
            raise url
        try:
            yield url
        finally:
            token, stop = stop_holder[0]
            trio.from_thread.run_sync(stop.set, trio_token=token)
            thread.join(timeout)

    # -- the API ------------------------------------------------------------------

    def _authorized(self, scope: dict[str, Any]) -> bool:
        headers = dict(scope["headers"])
        value = headers.get(b"authorization", b"").decode("latin-1")
        if not value.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.account_sid and password == self.auth_token

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        form = parse_qs(body.decode(), keep_blank_values=True)
        req = RestRequest(scope["method"], scope["path"], form, self._authorized(scope))
        self.requests.append(req)
        if self.delay_s:
            await trio.sleep(self.delay_s)
        if self.fail_next is not None:
            (status, data), self.fail_next = self.fail_next, None
        else:
            status, data = self._handle(req)
        req.status = status
        self.recorder.record({"type": "request", "path": req.path, "status": status})
        await respond(send, status, data)

    def _handle(self, req: RestRequest) -> tuple[int, dict[str, Any]]:
        if not req.authorized:
            return twilio_error(401, 20003, "Authenticate")
        if req.method == "GET" and (m := _CALL.match(req.path)):
            call = self.calls.get(m["ca"]) if m["ac"] == self.account_sid else None
            if call is None:
                return twilio_error(404, 20404, f"The requested resource {req.path} was not found")
            return 200, self._resource(call)
        if req.method != "POST":
            return twilio_error(405, 20004, "Method not allowed")
        one = {k: v[-1] for k, v in req.form.items()}
        if m := _CALL.match(req.path):
            if m["ac"] != self.account_sid:
                return twilio_error(404, 20404, f"The requested resource {req.path} was not found")
            return self._update(m["ca"], one)
        if m := _CALLS.match(req.path):
            if m["ac"] != self.account_sid:
                return twilio_error(404, 20404, f"The requested resource {req.path} was not found")
            return self._create(one)
        return twilio_error(404, 20404, f"The requested resource {req.path} was not found")

    def _update(self, sid: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        call = self.calls.get(sid)
        if call is None or call.status == "completed":
            return twilio_error(404, 20404, f"The requested resource /Calls/{sid}.json was not found")
        if "Twiml" in form and "Url" in form:
            return twilio_error(400, 21220, "Twiml and Url are mutually exclusive")
        if form.get("Status") == "completed":
            call.status = "completed"
        elif form.get("Status") == "canceled":
            if call.status in ("queued", "initiated", "ringing"):  # no effect once answered
                call.status = "canceled"
        elif form.get("Status"):
            return twilio_error(400, 21218, f"Invalid Status: {form['Status']}")
        elif "Twiml" in form:
            call.twiml.append(form["Twiml"])
            self._join(call)
        elif "Url" not in form:
            return twilio_error(400, 20001, "Nothing to update")
        return 200, self._resource(call)

    def _resource(self, call: FakeCall) -> dict[str, Any]:
        return {"sid": call.sid, "status": call.status, "account_sid": self.account_sid, "to": call.to,
                "from": call.from_, "answered_by": call.answered_by or None}

    def _join(self, call: FakeCall) -> None:
        """A live leg whose TwiML dials a conference is in it."""
        if call.status != "in-progress" or not call.twiml:
            return
        for conf in ET.fromstring(call.twiml[-1]).iter("Conference"):
            members = self.conferences.setdefault((conf.text or "").strip(), [])
            if call.sid not in members:
                members.append(call.sid)

    async def advance(self, sid: str, status: str, answered_by: str = "") -> int | None:
        """Move a call the bridge placed (``ringing``, ``in-progress``, ``busy``, ``no-answer``,
        ``completed``…) and post its status callback like Twilio; the receiver's HTTP status
        (None when the call subscribed to no such event)."""
        call = self.calls[sid]
        call.status, call.answered_by = status, answered_by or call.answered_by
        self._join(call)
        event = {"ringing": "ringing", "in-progress": "answered"}.get(status, "completed")
        if not call.status_callback or event not in call.events:
            return None
        form = {"AccountSid": self.account_sid, "CallSid": sid, "CallStatus": status, "To": call.to,
                "From": call.from_, "Direction": "outbound-api", "ApiVersion": "2010-04-01"}
        if call.answered_by:
            form["AnsweredBy"] = call.answered_by
        signature = RequestValidator(self.auth_token).compute_signature(call.status_callback, form)
        async with httpx.AsyncClient(timeout=5) as client:
            resp = await client.post(call.status_callback, data=form, headers={"X-Twilio-Signature": signature})
        self.callbacks.append((call.status_callback, form, resp.status_code))
        return resp.status_code

    def placed(self) -> list[FakeCall]:
        """The calls created through ``Calls.json``, oldest first."""
        return [c for c in self.calls.values() if c.to]

    def _create(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        to, from_ = form.get("To", ""), form.get("From", "")
        if not _E164.match(to):
            return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not _E164.match(from_):
            return twilio_error(400, 21212, f"Invalid 'From' Phone Number: {from_}")
        if from_ not in self.numbers:
            return twilio_error(400, 21210, f"'From' phone number not verified: {from_}")
        if not (form.get("Url") or form.get("Twiml")):
            return twilio_error(400, 21205, "Url or Twiml is required")
        if "Url" in form and "Twiml" in form:
            return twilio_error(400, 21220, "Twiml and Url are mutually exclusive")
        if form.get("MachineDetection", "Enable") not in ("Enable", "DetectMessageEnd"):
            # Twilio documents only these two values; anything else is a 400.
            return twilio_error(400, 21626, f"Invalid MachineDetection: {form['MachineDetection']}")
        timeout = form.get("MachineDetectionTimeout")
        if timeout is not None and not (timeout.isdigit() and 3 <= int(timeout) <= 59):
            return twilio_error(400, 21626, f"Invalid MachineDetectionTimeout: {timeout}")
        sid = "CA" + secrets.token_hex(16)
        events = tuple(self.requests[-1].form.get("StatusCallbackEvent", [])) or ("completed",)
        self.calls[sid] = FakeCall(sid, status="queued", to=to, from_=from_,
                                   twiml=[form["Twiml"]] if form.get("Twiml") else [],
                                   status_callback=form.get("StatusCallback", ""), events=events)
        return 201, self._resource(self.calls[sid])
