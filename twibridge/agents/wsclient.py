"""A WebSocket client connection that owns (and always closes) its TCP stream.

trio-websocket's ``open_websocket_url`` never closes its TCP stream when the
server closes first: a ResourceWarning, and an fd that lives until garbage
collection — fatal to reconnect loops.  Here we open the stream ourselves
(``trio.open_tcp_stream``, wrapped in ``trio.SSLStream`` for ``wss``), hand it
to ``wrap_client_stream`` and close it in ``finally``.  Used by the agent
providers, ``simulate-call`` and the tests.
"""

from __future__ import annotations

import ssl
from contextlib import asynccontextmanager
from typing import AsyncIterator, Mapping
from urllib.parse import urlsplit

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream


def split_ws_url(url: str) -> tuple[bool, str, int, str]:
    """``ws(s)://host[:port]/path?q`` → (tls, host, port, resource)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a ws:// or wss:// URL: {parts.scheme}://…")
    if not parts.hostname:
        raise ValueError("WebSocket URL has no host")
    tls = parts.scheme == "wss"
    port = parts.port or (443 if tls else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return tls, parts.hostname, port, resource


@asynccontextmanager
async def connect_ws(
    url: str,
    headers: Mapping[str, str] | None = None,
    *,
    max_message_size: int = 4 * 1024 * 1024,
    message_queue_size: int = 16,
    ssl_context: ssl.SSLContext | None = None,
    close_timeout: float = 2.0,
) -> AsyncIterator[WebSocketConnection]:
    """Open a client WebSocket; close it and its TCP stream on exit, bounded.

    The caller bounds the handshake (e.g. ``trio.fail_after`` around entering).

    Raises:
        OSError: TCP/TLS connection failed.
        trio_websocket.HandshakeError: the server refused the upgrade
            (``ConnectionRejected`` carries the HTTP status).
    """
    tls, host, port, resource = split_ws_url(url)
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    try:
        if tls:
            stream = trio.SSLStream(stream, ssl_context or ssl.create_default_context(), server_hostname=host)
        extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        host_header = host if port in (80, 443) else f"{host}:{port}"
        try:
            async with trio.open_nursery() as nursery:
                conn = await wrap_client_stream(
                    nursery, stream, host_header, resource, extra_headers=extra,  # type: ignore[arg-type]
                    max_message_size=max_message_size, message_queue_size=message_queue_size,
                )
                try:
                    yield conn
                finally:
                    with trio.move_on_after(close_timeout, shield=True):
                        await conn.aclose()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # One error (a rejected handshake, a closed connection in the body)
            # is raised as itself: callers catch ConnectionRejected, not a group.
            if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
                raise group.exceptions[0] from None
            raise
    finally:
        with trio.move_on_after(close_timeout, shield=True):
            await stream.aclose()
