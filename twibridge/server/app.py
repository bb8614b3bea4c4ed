"""The Quart-Trio app (webhook, Media Streams socket, health) and its Hypercorn runner.

Routes:

* ``POST /voice`` — Twilio's voice webhook: signed; answers
  ``<Connect><Stream>`` TwiML at once (never waits on the agent: Twilio gives
  up after 15 s), or the busy TwiML when full or draining.
* ``POST /stream-status`` — the stream's status callback: signed; logged.
* ``WS /media-stream`` — one call per socket; the upgrade is signed and
  checked *before* accepting (403 otherwise: no provider connection is ever
  opened for an unverified socket).
* ``GET /healthz`` — ``{"status": "ok"|"draining", "calls": N, "version": "x.y.z"}``.
* ``GET /metrics`` — Prometheus text (``[server] metrics_token`` → bearer).

Shutdown (SIGTERM/SIGINT): ``stopping`` is set (new webhooks get the busy
answer, ``/healthz`` says draining), live calls get up to ``drain_timeout_s``
to finish, then ``drained`` closes the rest with 1001 and ``serve`` returns.
Hypercorn alone would drop them with 1006 after 3 s.
"""

from __future__ import annotations

import contextlib
import signal
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart import Response, request, websocket
from quart_trio import QuartTrio

from twibridge import __version__
from twibridge.server import hypercorn_fix, systemd
from twibridge.server.asgi import ClosingHTTPConnection, MediaWebsocket, QuietWebsocketConnection
from twibridge.call.runner import Call
from twibridge.config import Config
from twibridge.logs import get_logger
from twibridge.runtime import Runtime
from twibridge.twilio import stream_token
from twibridge.twilio.signature import SignatureChecker, public_base, signed_url, to_ws
from twibridge.twilio.twiml import busy, connect_stream

log = get_logger("twibridge.server.app")
hypercorn_fix.install()


def create_app(rt: Runtime) -> QuartTrio:
    cfg = rt.config
    app = QuartTrio("twibridge")
    app.asgi_http_class = ClosingHTTPConnection
    app.asgi_websocket_class = QuietWebsocketConnection
    app.websocket_class = MediaWebsocket
    secret = cfg.twilio.auth_token.get_secret_value()
    checker = SignatureChecker(secret)
    validate = cfg.twilio.validate_signatures

    def remote_addr() -> str:
        return str(request.remote_addr or "")

    async def signed_form() -> dict[str, Any] | None:
        """The form if its signature is valid (or checks are off), else None."""
        form = await request.form
        if not validate:
            return form.to_dict()
        url = signed_url(cfg.server.public_url, request.scheme, request.host, request.path,
                         request.query_string.decode("latin-1"))
        if not checker.valid(url, form, request.headers.get("X-Twilio-Signature")):
            log.warning("http.bad_signature", path=request.path, remote=remote_addr(), signed_url=url)
            if rt.metrics:
                rt.metrics.refused("unsigned")
            return None
        return form.to_dict()

    def twiml(body: str) -> Response:
        return Response(body, status=200, content_type="text/xml")

    @app.post("/voice")
    async def voice() -> Response:
        form = await signed_form()
        if form is None:
            return Response("invalid signature\n", status=403, content_type="text/plain")
        call_sid = form.get("CallSid", "")
        if rt.stopping.is_set() or await rt.cluster_active() >= cfg.server.max_calls:
            why = "draining" if rt.stopping.is_set() else "busy"
            log.warning("voice.refused", call_sid=call_sid, reason=why, active=rt.active)
            if rt.metrics:
                rt.metrics.refused("busy")
            return twiml(busy(cfg.fallback.say, cfg.fallback.dial))
        base = public_base(cfg.server.public_url, request.scheme, request.host)
        params: dict[str, str] = {k: str(form[k]) for k in ("CallSid", "From", "To") if k in form}
        if validate and cfg.twilio.require_stream_token:
            params[stream_token.PARAMETER] = stream_token.issue(secret, call_sid, time.time())
        log.info("voice.answered", call_sid=call_sid, from_number=form.get("From", ""))
        return twiml(connect_stream(to_ws(base) + "/media-stream", base + "/stream-status", params))

    @app.post("/stream-status")
    async def stream_status() -> Response:
        form = await signed_form()
        if form is None:
            return Response("invalid signature\n", status=403, content_type="text/plain")
        log.info("stream.status", call_sid=form.get("CallSid", ""), stream_sid=form.get("StreamSid", ""),
                 stream_event=form.get("StreamEvent", ""), stream_error=form.get("StreamError", ""))
        return Response("", status=204)

    @app.websocket("/media-stream")
    async def media_stream() -> Any:
        remote = str(websocket.remote_addr or "")
        if validate:
            url = signed_url(cfg.server.public_url, websocket.scheme, websocket.host, websocket.path,
                             websocket.query_string.decode("latin-1"), websocket=True)
            if not checker.valid(url, {}, websocket.headers.get("X-Twilio-Signature")):
                log.warning("ws.bad_signature", remote=remote, signed_url=url)
                if rt.metrics:
                    rt.metrics.refused("unsigned")
                return Response("invalid signature\n", status=403, content_type="text/plain")
        await websocket.accept()
        # Quart's websocket object already is a call.Transport (receive, send, close).
        await Call(websocket._get_current_object(), rt, remote).run()  # type: ignore[attr-defined]
        return None

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"status": "draining" if rt.stopping.is_set() else "ok", "calls": len(rt.calls),
                "version": __version__}

    @app.get("/metrics")
    async def metrics() -> Response:
        token = cfg.server.metrics_token.get_secret_value()
        if token and request.headers.get("Authorization", "") != f"Bearer {token}":
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
    if config.server.tls_cert:  # Hypercorn's own TLS (checked first: server/tls.py)
        hc.certfile, hc.keyfile = config.server.tls_cert, config.server.tls_key
    return hc


def make_runtime(config: Config) -> Runtime:
    from twibridge.server.metrics import Metrics
    from twibridge.state import make_registry

    return Runtime(config=config, registry=make_registry(config), metrics=Metrics())


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
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``shutdown_trigger`` returns), then drain.

    ``task_status.started`` gets the base URL actually bound (port 0 works).
    A worker of ``serve --workers`` (:mod:`twibridge.server.workers`) passes the
    inherited listening socket as ``fd`` instead of binding, and its
    heartbeat as ``beside``: a task started once listening, given the event
    that starts the drain (as a signal would).
    """
    owns_runtime = rt is None
    rt = rt or make_runtime(config)
    hc = hypercorn_config(config, host or config.server.host, config.server.port if port is None else port)
    if fd is not None:
        hc.bind = [f"fd://{fd}"]
    notifier = systemd.Notifier.from_environ()
    watchdog_s = systemd.watchdog_period()
    if rt.metrics is not None and getattr(rt.registry, "metrics", False) is None:
        rt.registry.metrics = rt.metrics  # type: ignore[attr-defined]  # a shared registry reports outages

    signalled = trio.Event()

    async def on_signals(signals: AsyncIterator[int]) -> None:
        # Open for the server's whole life: a repeated SIGTERM/SIGINT (e.g.
        # the whole control group signalled) must not kill a draining server.
        async for signum in signals:
            if signalled.is_set():
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
    receiver = trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) if shutdown_trigger is None else None
    try:
        with receiver or contextlib.nullcontext() as signals:
            async with trio.open_nursery() as nursery:
                async def run_hypercorn(task_status: trio.TaskStatus[list[str]]) -> None:
                    await hypercorn_serve(create_app(rt), hc, shutdown_trigger=trigger, task_status=task_status)
                    nursery.cancel_scope.cancel(reason="server stopped")  # ends the tasks below

                if signals is not None:
                    nursery.start_soon(on_signals, signals)
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
