"""The Quart-Trio app (webhook, Media Streams socket, health) and its Hypercorn runner.

Routes:

* ``POST /voice`` — Twilio's voice webhook: signed; answers
  ``<Connect><Stream>`` TwiML at once (never waits on the agent: Twilio gives
  up after 15 s), or the busy TwiML when full or draining.
* ``POST /stream-status`` — the stream's status callback: signed; logged.
* ``POST /transfer-status?call=CA…`` — a warm transfer's human leg's status: signed;
  handed to that call if it lives here (else its own poll finds out: handoff/warm.py).
* ``WS /media-stream`` — one call per socket; the upgrade is signed and
  checked *before* accepting (403 otherwise: no provider connection is ever
  opened for an unverified socket).  Served at the ASGI level in front of
  Quart (:mod:`twibridge.server.media_asgi`: no relay task per frame).
* ``GET /healthz`` — ``{"status": "ok"|"draining", "calls": N, "version": "x.y.z"}``.
* ``GET /metrics`` — Prometheus text (``[server] metrics_token`` → bearer).

Shutdown (SIGTERM/SIGINT): ``stopping`` is set (new webhooks get the busy
answer, ``/healthz`` says draining), live calls get up to ``drain_timeout_s``
to finish, then ``drained`` closes the rest with 1001 and ``serve`` returns.
Hypercorn alone would drop them with 1006 after 3 s.
"""

from __future__ import annotations

import contextlib
import hmac
import math
import signal
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart import Response, request
from quart_trio import QuartTrio

from twibridge import __version__
from twibridge.server import hypercorn_fix, reload, systemd, vapi_server
from twibridge.call import admission
from twibridge.server.asgi import CappedRequest, ClosingHTTPConnection, MediaWebsocket, QuietWebsocketConnection
from twibridge.server.media_asgi import MediaSocket, MediaStreamRoute
from twibridge.server.guard import Guard, LogBudget, truncate
from twibridge.call.runner import Call
from twibridge.config import Config
from twibridge.handoff import conference
from twibridge.handoff.transfer import deliver_status
from twibridge.logs import get_logger
from twibridge.records.recording import sweeper
from twibridge import routing
from twibridge.runtime import Runtime
from twibridge.twilio import stream_token
from twibridge.twilio.signature import SignatureChecker, public_base, signed_url, to_ws
from twibridge.twilio.outbound import answered_by_machine
from twibridge.twilio.twiml import busy, connect_stream, xml_safe

log = get_logger("twibridge.server")
hypercorn_fix.install()


def create_app(rt: Runtime) -> QuartTrio:
    app = QuartTrio("twibridge")
    app.asgi_http_class = ClosingHTTPConnection
    app.asgi_websocket_class = QuietWebsocketConnection
    app.websocket_class = MediaWebsocket
    app.request_class = CappedRequest
    cfg = rt.config
    # Webhook bodies (docs/security.md): a Twilio form is a few KB.  Quart's
    # defaults (16 MiB, 60 s, no url-encoded field cap) let one unsigned request
    # hold the loop that carries every call's audio.
    app.config.update(MAX_CONTENT_LENGTH=cfg.server.max_body_bytes, MAX_FORM_MEMORY_SIZE=cfg.server.max_body_bytes,
                      MAX_FORM_PARTS=cfg.server.max_form_fields, BODY_TIMEOUT=cfg.server.body_timeout_s)
    # The body limits above and the listener are fixed for the server's life (a reload keeps them:
    # server/reload.py RESTART_ONLY); what a request reads below is ``rt.config`` as it is now.
    checkers: dict[str, SignatureChecker] = {}
    bad_signatures = LogBudget()

    def current() -> tuple[Config, SignatureChecker]:
        """The config now (a reload swaps ``rt.config``) and a checker for its auth token."""
        now = rt.config
        secret = now.twilio.auth_token.get_secret_value()
        if secret not in checkers:
            checkers.clear()
            checkers[secret] = SignatureChecker(secret)
        return now, checkers[secret]

    def remote_addr() -> str:
        return str(request.remote_addr or "")

    def refused_unsigned(event: str, remote: str, path: str, url: str) -> None:
        """One bad signature: counted always, logged in full only within the budget (URL truncated)."""
        if rt.metrics:
            rt.metrics.refused("unsigned")
        if bad_signatures.take():
            log.warning(event, path=truncate(path), remote=remote, signed_url=truncate(url))
        elif bad_signatures.summary_due():
            log.warning("server.bad_signatures_suppressed", refused_total=bad_signatures.seen,
                        last_remote=remote, message="further bad signatures are logged at 2x counts; "
                        "twibridge_calls_total{outcome=\"refused_unsigned\"} counts each")

    async def signed_form() -> dict[str, Any] | None:
        """The form if its signature is valid (or checks are off), else None.

        No signature header at all: refused before the body is read.
        """
        cfg, checker = current()
        if cfg.twilio.validate_signatures and not request.headers.get("X-Twilio-Signature"):
            refused_unsigned("http.bad_signature", remote_addr(), request.path, "(no X-Twilio-Signature header)")
            return None
        form = await request.form
        if not cfg.twilio.validate_signatures:
            return form.to_dict()
        url = signed_url(cfg.server.public_url, request.scheme, request.host, request.path,
                         request.query_string.decode("latin-1"))
        if not checker.valid(url, form, request.headers.get("X-Twilio-Signature")):
            refused_unsigned("http.bad_signature", remote_addr(), request.path, url)
            return None
        return form.to_dict()

    def twiml(body: str) -> Response:
        return Response(body, status=200, content_type="text/xml")

    def refuse_busy(cfg: Config, call_sid: str, why: str) -> Response:
        log.warning("voice.refused", call_sid=call_sid, reason=why, active=rt.active)
        if rt.metrics:
            rt.metrics.refused("busy")
        return twiml(busy(cfg.fallback.say, cfg.fallback.dial))

    @app.post("/voice")
    async def voice() -> Response:
        form = await signed_form()
        if form is None:
            return Response("invalid signature\n", status=403, content_type="text/plain")
        cfg = rt.config
        call_sid, account_sid = str(form.get("CallSid", "")), str(form.get("AccountSid", ""))
        if not (admission.CALL_SID.match(call_sid) and admission.ACCOUNT_SID.match(account_sid)):
            # Twilio's SIDs never look otherwise: a signed form whose key/value boundaries were moved.
            log.warning("voice.bad_sid", call_sid=call_sid[:40], account_sid=account_sid[:40], remote=remote_addr())
            return Response("bad CallSid or AccountSid\n", status=400, content_type="text/plain")
        if answered_by_machine(form.get("AnsweredBy")):
            return twiml(await admission.machine_answered(rt, cfg, call_sid, str(form.get("AnsweredBy")),
                                                          str(form.get("To", ""))))
        admitted = await admission.bounded(rt, rt.registry.admitted(), 0, "admitted")
        full = max(admitted, len(rt.calls)) >= cfg.server.max_calls
        if rt.stopping.is_set():
            return refuse_busy(cfg, call_sid, "draining")
        # Once per CallSid (Twilio's retries of an unanswered one excepted): a replay is refused.
        reserve_s = cfg.twilio.stream_token_ttl_s
        if not full and not await admission.bounded(rt, rt.registry.claim_answer(call_sid, reserve_s), True,
                                                    "claim_answer"):
            log.warning("voice.replay_refused", call_sid=call_sid, remote=remote_addr())
            if rt.metrics:
                rt.metrics.refused("duplicate")
            return twiml(busy(cfg.fallback.say, cfg.fallback.dial))
        if full:
            # Full, unless this is Twilio's retry of a CallSid we answered: its reservation is
            # already counted (the count does not grow when it claims again).
            claimed = await admission.bounded(rt, rt.registry.claim_answer(call_sid, reserve_s), False,
                                              "claim_answer")
            after = await admission.bounded(rt, rt.registry.admitted(), admitted + 1, "admitted")
            if not claimed or after > admitted:
                if claimed:  # a new call after all: its reservation must not hold a slot
                    await admission.bounded(rt, rt.registry.release_answer(call_sid), None, "release_answer")
                return refuse_busy(cfg, call_sid, "busy")
        facts = routing.facts_from_webhook(form, request.args.to_dict())  # which agent: docs/routing.md
        decision = await routing.route_call(cfg, facts, rt.calls_on_route,
                                           rt.metrics.routing_lookup if rt.metrics else None)
        if decision.refuse:  # (its reservation freed: the slot was never used)
            await admission.bounded(rt, rt.registry.release_answer(call_sid), None, "release_answer")
            log.warning("voice.refused", call_sid=call_sid, reason=decision.why, agent=decision.agent)
            if rt.metrics:
                rt.metrics.refused("busy" if decision.route is not None else "rejected")
            return twiml(busy(decision.say, decision.dial))
        base = public_base(cfg.server.public_url, request.scheme, request.host)
        # XML-safe before the token binds them: start.customParameters carries what the TwiML said.
        params: dict[str, str] = {k: xml_safe(str(form[k])) for k in ("CallSid", "From", "To") if k in form}
        params.update({k: xml_safe(v) for k, v in routing.parameters(decision, facts).items()})
        if cfg.twilio.validate_signatures and cfg.twilio.require_stream_token:
            # Minted over every <Parameter> the TwiML carries (add parameters above this line).
            params[stream_token.PARAMETER] = stream_token.issue(
                cfg.twilio.auth_token.get_secret_value(), account_sid=account_sid, call_sid=call_sid,
                params=params, now=time.time())
        log.info("voice.answered", call_sid=call_sid, from_number=form.get("From", ""), agent=decision.agent,
                 why=decision.why)
        return twiml(connect_stream(to_ws(base) + "/media-stream", base + "/stream-status", params,
                                    say=cfg.recording.announce))

    @app.post("/stream-status")
    async def stream_status() -> Response:
        form = await signed_form()
        if form is None:
            return Response("invalid signature\n", status=403, content_type="text/plain")
        log.info("stream.status", call_sid=form.get("CallSid", ""), stream_sid=form.get("StreamSid", ""),
                 stream_event=form.get("StreamEvent", ""), stream_error=form.get("StreamError", ""))
        return Response("", status=204)

    @app.post(conference.STATUS_PATH)
    async def transfer_status() -> Response:
        form = await signed_form()
        if form is None:
            return Response("invalid signature\n", status=403, content_type="text/plain")
        caller = request.args.get(conference.CALL_PARAMETER, "")[:40]
        delivered = deliver_status(rt.calls, caller, form)
        log.info("transfer.status", call_sid=caller, leg_sid=str(form.get("CallSid", ""))[:40], delivered=delivered,
                 call_status=str(form.get("CallStatus", ""))[:20], answered_by=str(form.get("AnsweredBy", ""))[:20])
        return Response("", status=204)

    prestart = admission.PreStartGate()  # sockets before ``start``: capped apart from calls
    async def media_stream(ws: MediaSocket) -> None:
        """``WS /media-stream``, served in front of Quart (:mod:`twibridge.server.media_asgi`)."""
        cfg, checker = current()
        if cfg.twilio.validate_signatures:
            url = signed_url(cfg.server.public_url, ws.scheme, ws.host, ws.path,
                             ws.query_string.decode("latin-1"), websocket=True)
            if not checker.valid(url, {}, ws.header("X-Twilio-Signature")):
                refused_unsigned("ws.bad_signature", ws.remote, ws.path, url)
                return await ws.reject(403, "invalid signature\n")
        ticket = prestart.enter(ws.remote)  # sockets before start: capped apart from calls
        if ticket is None:
            log.warning("ws.prestart_full", remote=ws.remote, held=prestart.held)
            return await ws.reject(503, "too many streams starting\n")
        try:
            await ws.accept()
            await Call(ws, rt, ws.remote, ticket).run()
        finally:
            ticket.release()

    app.asgi_app = MediaStreamRoute(app.asgi_app, media_stream)  # type: ignore[method-assign]
    vapi_server.register(app, rt)  # POST /vapi/server: VAPI's Server URL for tools (issue #17)

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"status": "draining" if rt.stopping.is_set() else "ok", "calls": len(rt.calls),
                "version": __version__}

    @app.get("/metrics")
    async def metrics() -> Response:
        token = rt.config.server.metrics_token.get_secret_value()
        given = request.headers.get("Authorization", "").encode("latin-1")  # as received
        if token and not hmac.compare_digest(given, f"Bearer {token}".encode()):
            return Response("unauthorized\n", status=401, content_type="text/plain")
        if rt.metrics is None:
            return Response("metrics disabled\n", status=404, content_type="text/plain")
        body, ctype = rt.metrics.render(rt)
        return Response(body, status=200, content_type=ctype)

    return app


def hypercorn_config(config: Config, host: str, port: int) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hc.accesslog = None
    hc.errorlog = None  # our own structured logs say what matters
    # Twice our own cap: the call's reader refuses messages over the cap itself
    # (close 1008, reason logged, call ended at once).  Hypercorn's own limit is
    # only the backstop: past it hypercorn 0.18 sends 1009 but stops passing
    # events to the app, so the call lingers until the idle timeout.
    hc.websocket_max_message_size = 2 * config.server.max_message_bytes
    hc.graceful_timeout = config.calls.teardown_timeout_s + 1
    # A socket silent this long is dead: longer than a call's own idle timeout
    # (which ends it first, with its fallback); the body timeout covers slow
    # bodies, keep_alive_timeout (5 s) slow or idle request heads.
    hc.read_timeout = math.ceil(config.calls.idle_timeout_s) + 10
    setattr(hc, hypercorn_fix.CAP_ATTRIBUTE, hypercorn_fix.ConnectionCap(config.server.max_connections))
    if config.server.tls_cert:  # Hypercorn's own TLS (checked first: server/tls.py)
        hc.certfile, hc.keyfile = config.server.tls_cert, config.server.tls_key
    return hc


def make_runtime(config: Config) -> Runtime:
    from twibridge.call.sounds import load_sounds
    from twibridge.records.delivery import make_deliverer
    from twibridge.server.metrics import Metrics
    from twibridge.state import make_registry

    metrics = Metrics()
    return Runtime(config=config, registry=make_registry(config), metrics=metrics, sounds=load_sounds(config),
                   deliveries=make_deliverer(config, metrics.webhook_delivery))


async def drain(rt: Runtime, notifier: systemd.Notifier | None = None) -> None:
    """Refuse new calls, wait (bounded) for live ones, then close the rest with 1001.

    ``notifier`` tells systemd (``STOPPING=1``, and a stop timeout covering
    this whole bounded drain).
    """
    rt.stopping.set()
    log.info("server.draining", calls=rt.active, drain_timeout_s=rt.config.server.drain_timeout_s)
    if notifier is not None:
        notifier.stopping(systemd.status_text(rt), systemd.stop_timeout_s(rt))
    with trio.move_on_after(rt.config.server.drain_timeout_s):
        while rt.active:  # live calls and sockets still before ``start``
            await rt.calls_changed.wait()
    rt.drained.set()
    with trio.move_on_after(rt.config.calls.teardown_timeout_s + 1):
        while rt.calls:
            await rt.calls_changed.wait()


async def serve(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    rt: Runtime | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    fd: int | None = None,
    beside: Callable[[trio.Event], Awaitable[None]] | None = None,
    config_path: Path | None = None,
    reload_on_hangup: bool = True,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``shutdown_trigger`` returns), then drain.

    ``task_status.started`` gets the base URL actually bound (port 0 works).
    A worker of ``serve --workers`` (:mod:`twibridge.server.workers`) passes the
    inherited listening socket as ``fd`` instead of binding, and its
    heartbeat as ``beside``: a task started once listening, given the event
    that starts the drain (as a signal would).

    SIGHUP re-reads ``config_path`` (and the environment) for new calls
    (:mod:`twibridge.server.reload`); a worker of ``--workers`` passes
    ``reload_on_hangup=False``: its parent validates once and forwards.
    """
    owns_runtime = rt is None
    rt = rt or make_runtime(config)
    hc = hypercorn_config(config, host or config.server.host, config.server.port if port is None else port)
    if fd is not None:
        hc.bind = [f"fd://{fd}"]
    cap: hypercorn_fix.ConnectionCap = getattr(hc, hypercorn_fix.CAP_ATTRIBUTE)
    if rt.metrics is not None:
        metrics = rt.metrics
        cap.on_refused = lambda: metrics.refused("overload")
    notifier = systemd.Notifier.from_environ()
    watchdog_s = systemd.watchdog_period()
    if rt.metrics is not None and getattr(rt.registry, "metrics", False) is None:
        rt.registry.metrics = rt.metrics  # type: ignore[attr-defined]  # a shared registry reports outages

    signalled = trio.Event()

    async def on_signals(signals: AsyncIterator[int]) -> None:
        # Open for the server's whole life: a repeated SIGTERM/SIGINT (e.g.
        # the whole control group signalled) must not kill a draining server.
        async for signum in signals:
            if signum == signal.SIGHUP:
                if signalled.is_set() or not reload_on_hangup:
                    log.info("server.signal", signal="SIGHUP", action="ignored: " + (
                        "stopping" if signalled.is_set() else "reloads come from the --workers parent"))
                else:
                    await reload.reload_from_file(rt, config_path, notifier)
            elif signalled.is_set():
                log.info("server.signal", signal=signal.Signals(signum).name, repeated=True,
                         action="ignored: already stopping")
            else:
                log.info("server.signal", signal=signal.Signals(signum).name)
                signalled.set()

    async def trigger() -> None:
        await (shutdown_trigger or signalled.wait)()
        await drain(rt, notifier)

    # Programmatic callers (tests, simulate-call) bring their own trigger and
    # may run outside the main thread, where signals cannot be received.
    receiver = (trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) if shutdown_trigger is None
                else None)
    try:
        with receiver or contextlib.nullcontext() as signals:
            async with trio.open_nursery() as nursery:
                async def run_hypercorn(task_status: trio.TaskStatus[list[str]]) -> None:
                    app = Guard(create_app(rt), trusted_proxies=config.server.trusted_proxies,
                                per_address=config.server.max_connections_per_address,
                                on_refused=cap.on_refused)
                    await hypercorn_serve(app, hc, shutdown_trigger=trigger, task_status=task_status)
                    nursery.cancel_scope.cancel(reason="server stopped")  # ends the tasks below

                if signals is not None:
                    nursery.start_soon(on_signals, signals)
                if rt.deliveries is not None:  # reports spooled by an earlier life go out now
                    await nursery.start(rt.deliveries.run)
                if config.recording.enabled and config.recording.keep_days:
                    nursery.start_soon(sweeper, config.recording)
                binds = await nursery.start(run_hypercorn)
                url = binds[0]
                notifier.ready(systemd.status_text(rt))
                await nursery.start(lambda task_status: systemd.watch(rt, notifier, watchdog_s=watchdog_s,
                                                                      task_status=task_status))
                log.info("server.listening", url=url, provider=config.agent.provider,
                         max_calls=config.server.max_calls, systemd_notify=notifier.enabled, watchdog_s=watchdog_s)
                if beside is not None:
                    nursery.start_soon(beside, signalled)
                task_status.started(url)
    finally:
        notifier.close()
        if owns_runtime:
            with trio.move_on_after(config.state.timeout_s, shield=True):
                await rt.registry.aclose()
                if rt.deliveries is not None:
                    await rt.deliveries.aclose()


@asynccontextmanager
async def running_server(config: Config, *, host: str = "127.0.0.1", port: int = 0,
                         rt: Runtime | None = None) -> AsyncIterator[str]:
    """Run the bridge in this Trio loop for the ``async with`` block; yield its base URL.

    Leaving the block drains it like a SIGTERM would (live calls close 1001).
    """
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(lambda task_status: serve(config, host=host, port=port, rt=rt,
                                                            shutdown_trigger=stop.wait, task_status=task_status))
        try:
            yield url
        finally:
            stop.set()
