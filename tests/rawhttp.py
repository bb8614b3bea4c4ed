"""A raw HTTP/1.1 client for hostile requests: a head now, the body later (or never).

httpx sends a whole request before reading the answer; the security tests
need to see the server answer *while* the body is still unsent (403 before
the body, 413 at the cap, 408 for a stalled body), so the request is written
by hand on a trio socket.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def _host(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def open_request(url: str, path: str, headers: dict[str, str] | None = None, *,
                       method: str = "POST", content_length: int | None = None,
                       chunked: bool = False) -> trio.SocketStream:
    """Connect and send the request head only; the caller sends (some of) the body."""
    host, port = _host(url)
    stream = await trio.open_tcp_stream(host, port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}",
             "Content-Type: application/x-www-form-urlencoded"]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    return stream


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def read_response(stream: trio.SocketStream) -> RawResponse:
    """One response (head and a Content-Length body); raises EOFError if the server closed first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError(f"closed before a response: {buf!r}")
        buf += data
    head, body = buf.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        data = await stream.receive_some(65536)
        if not data:
            break
        body += data
    return RawResponse(int(status_line.split()[1]), headers, body)


async def closed_by_peer(stream: trio.SocketStream) -> bool:
    """True once the server closed the connection (EOF or reset), draining anything sent first."""
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:
        pass
    return True
