"""A minimal WebSocket client over a raw Trio TCP stream, for the bench driver only.

Why not trio-websocket: at 200 calls the driver sends 10 000 frames a second,
and wsproto's per-message cost (~100 µs for send + receive, see the stack
notes) would make the *driver* the bottleneck on a 2-core VM.  This client
does the least RFC 6455 allows: an upgrade request, unfragmented text frames
sent with an all-zero mask key (masking is then the identity, so no per-byte
XOR in Python), and a small parser for the server's unmasked frames (with
fragmentation, ping → pong and close handled).

The server side (:func:`accept`, :func:`server_frame`, big-integer
:func:`unmask`) serves the lean fake agent (:mod:`bench.fake_realtime`) and
the ``--transport raw`` diagnostic of :mod:`bench.bridge_server`.  Bench
code only: no extensions, no compression, no limits beyond the handshake.
"""

from __future__ import annotations

import base64
import os
import struct

import trio

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_ZERO_MASK = b"\0\0\0\0"
#: The largest HTTP upgrade response we accept before giving up.
MAX_HANDSHAKE_BYTES = 16 * 1024


class HandshakeFailed(Exception):
    """The server answered the upgrade with something other than 101."""


def frame(op: int, data: bytes) -> bytes:
    """One final client frame (masked with a zero key: the payload goes as is)."""
    n = len(data)
    if n < 126:
        head = bytes((0x80 | op, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | op, 0xFE, n)
    else:
        head = struct.pack("!BBQ", 0x80 | op, 0xFF, n)
    return head + _ZERO_MASK + data


def text(data: str) -> bytes:
    return frame(OP_TEXT, data.encode())


class RawWebSocket:
    def __init__(self, stream: trio.SocketStream, leftover: bytes = b"") -> None:
        self.stream = stream
        self._buf = bytearray(leftover)
        self._frag_op: int | None = None
        self._frag = bytearray()
        self.closed_code: int | None = None
        self._lock = trio.Lock()  # the reader answers pings/close while the sender sends
        self.server = False  # server side: frames go unmasked

    @classmethod
    async def connect(cls, host: str, port: int, path: str, headers: dict[str, str] | None = None) -> RawWebSocket:
        stream = await trio.open_tcp_stream(host, port)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n")
            await stream.send_all(req.encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = await stream.receive_some(4096)
                if not data or len(buf) > MAX_HANDSHAKE_BYTES:
                    raise HandshakeFailed("connection closed during the upgrade")
                buf += data
            head, _, rest = buf.partition(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0]
            if b" 101 " not in status + b" ":
                raise HandshakeFailed(status.decode(errors="replace"))
            return cls(stream, rest)
        except BaseException:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            raise

    async def send(self, data: bytes) -> None:
        """Send pre-built frame bytes (one or several concatenated)."""
        async with self._lock:
            await self.stream.send_all(data)

    def _frame(self, op: int, data: bytes) -> bytes:
        return server_frame(op, data) if self.server else frame(op, data)

    async def receive(self) -> tuple[int, bytes] | None:
        """The next data message as (opcode, payload); None once the server closed."""
        while True:
            msg = self._parse()
            if msg is not None:
                op, payload = msg
                if op == OP_PING:
                    await self.send(self._frame(OP_PONG, payload))
                    continue
                if op == OP_PONG:
                    continue
                if op == OP_CLOSE:
                    self.closed_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    try:
                        with trio.move_on_after(1):
                            await self.send(self._frame(OP_CLOSE, payload[:2]))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    return None
                return op, payload
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                if self.closed_code is None:
                    self.closed_code = 1006
                return None
            self._buf += data

    def _parse(self) -> tuple[int, bytes] | None:
        while True:
            b = self._buf
            if len(b) < 2:
                return None
            b0, b1 = b[0], b[1]
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(b) < 4:
                    return None
                n = (b[2] << 8) | b[3]
                pos = 4
            elif n == 127:
                if len(b) < 10:
                    return None
                n = int.from_bytes(b[2:10], "big")
                pos = 10
            if b1 & 0x80:
                mask = bytes(b[pos:pos + 4])
                pos += 4
            else:
                mask = None
            if len(b) < pos + n:
                return None
            payload = bytes(b[pos:pos + n])
            del b[:pos + n]
            if mask is not None:  # clients mask (our server side in bench.fake_realtime)
                payload = unmask(payload, mask)
            op, fin = b0 & 0x0F, b0 & 0x80
            if op >= 0x8:  # control frames are never fragmented
                return op, payload
            if op == OP_CONT:
                self._frag += payload
                if fin and self._frag_op is not None:
                    out = (self._frag_op, bytes(self._frag))
                    self._frag_op, self._frag = None, bytearray()
                    return out
                continue
            if not fin:
                self._frag_op, self._frag = op, bytearray(payload)
                continue
            return op, payload

    async def aclose(self, code: int = 1000) -> None:
        try:
            with trio.move_on_after(1):
                await self.send(self._frame(OP_CLOSE, struct.pack("!H", code)))
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass
        await self.stream.aclose()


# ------------------------------------------------------------------ server side


def server_frame(op: int, data: bytes) -> bytes:
    """One final, unmasked server frame."""
    n = len(data)
    if n < 126:
        head = bytes((0x80 | op, n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | op, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | op, 127, n)
    return head + data


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte key, as one big-integer operation (no per-byte Python loop)."""
    n = len(payload)
    if not n or mask == _ZERO_MASK:
        return payload
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


async def accept(stream: trio.SocketStream) -> tuple[str, dict[str, str], RawWebSocket] | None:
    """Read an upgrade request and answer 101; (path, lower-cased headers, socket), or None."""
    import hashlib

    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(4096)
        if not data or len(buf) > MAX_HANDSHAKE_BYTES:
            return None
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    key = headers.get("sec-websocket-key", "")
    accept_key = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Accept: " + accept_key + b"\r\n\r\n")
    ws = RawWebSocket(stream, rest)
    ws.server = True
    return (parts[1] if len(parts) > 1 else "/"), headers, ws
