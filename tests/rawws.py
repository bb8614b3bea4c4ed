"""A raw WebSocket client for hostile traffic: any frame, any bytes, and abrupt drops.

trio-websocket (and every well-behaved client) refuses to send what the
reliability tests need: text frames that are not UTF-8, empty or reserved
frames, and a TCP drop with no close frame.  The framing here is RFC 6455
by hand (sans-IO), with two thin I/O shells: :class:`TrioClient` for async
tests and :class:`SyncClient` for Hypothesis, whose examples run in plain
threads against a server in its own Trio loop.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from dataclasses import dataclass

import trio

from support import TOKEN
from twibridge.twilio.signature import SignatureChecker

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte key, via big ints (a Python loop costs ~5 ms per 64 KiB)."""
    n = len(payload)
    if not n:
        return b""
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """One client frame (masked, as RFC 6455 requires of clients)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    key = os.urandom(4)
    return head + key + mask(payload, key)


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    return encode_frame(CLOSE, struct.pack("!H", code) + reason.encode())


def handshake(host: str, path: str, signature: str | None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if signature:
        lines.append(f"X-Twilio-Signature: {signature}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def twilio_signature(url: str, token: str = TOKEN) -> str:
    """What Twilio would sign for an upgrade to ``url`` (``http://`` → ``ws://``)."""
    return SignatureChecker(token).sign("ws://" + url.removeprefix("http://") + "/media-stream", {})


class FrameReader:
    """Server frames (unmasked) out of a byte stream."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        while True:
            if len(self.buf) < 2:
                return out
            opcode, n, at = self.buf[0] & 0x0F, self.buf[1] & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    return out
                n, at = struct.unpack("!H", self.buf[2:4])[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    return out
                n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
            if len(self.buf) < at + n:
                return out
            out.append((opcode, bytes(self.buf[at:at + n])))
            del self.buf[:at + n]


@dataclass
class Ending:
    """How a connection ended, seen from the client."""

    server_code: int | None = None  # the server's close frame, if any
    server_closed_first: bool = False
    eof: bool = False
    messages: int = 0


def _host(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _check_upgrade(head: bytes) -> None:
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status + b" ":
        raise ConnectionError(f"upgrade refused: {status!r}")


class TrioClient:
    """Async raw client on a trio SocketStream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = FrameReader()
        self.ending = Ending()
        self.closed_sent = False
        #: Frames that came in the same read as the 101 (the server may send at once after accepting).
        self.early: list[tuple[int, bytes]] = []

    @classmethod
    async def connect(cls, url: str, signature: str | None = None) -> TrioClient:
        host, port = _host(url)
        stream = await trio.open_tcp_stream(host, port)
        try:
            await stream.send_all(handshake(f"{host}:{port}", "/media-stream",
                                            twilio_signature(url) if signature is None else signature))
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    raise ConnectionError("EOF during handshake")
                head += chunk
            head, rest = head.split(b"\r\n\r\n", 1)
            _check_upgrade(head)
        except BaseException:
            await stream.aclose()
            raise
        client = cls(stream)
        client.early = client.reader.feed(rest)
        return client

    async def send(self, frame: bytes) -> bool:
        """Send raw bytes; False if the server has already gone."""
        try:
            await self.stream.send_all(frame)
            return True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False

    async def text(self, message: str) -> bool:
        return await self.send(encode_frame(TEXT, message.encode()))

    async def read_until_closed(self) -> Ending:
        """Read (and count) frames until the server closes; answer its close frame."""
        frames, self.early = self.early, []
        while not self.ending.eof:
            for opcode, payload in frames:
                if opcode == CLOSE and self.ending.server_code is None:
                    self.ending.server_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    self.ending.server_closed_first = not self.closed_sent
                    if not self.closed_sent:
                        self.closed_sent = True
                        await self.send(close_frame(self.ending.server_code))
                elif opcode in (TEXT, BINARY):
                    self.ending.messages += 1
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.ending.eof = True
            frames = self.reader.feed(data)
        return self.ending

    async def close(self, code: int = 1000) -> Ending:
        if not self.closed_sent:
            self.closed_sent = True
            await self.send(close_frame(code))
        return await self.read_until_closed()

    async def abort(self, reset: bool = True) -> None:
        """Drop the TCP connection with no close frame (RST, or a bare FIN)."""
        if reset:
            self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()

    async def aclose(self) -> None:
        await self.stream.aclose()


class SyncClient:
    """Blocking raw client, for code running outside Trio (Hypothesis examples)."""

    def __init__(self, url: str, signature: str | None = None, timeout: float = 5.0) -> None:
        host, port = _host(url)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = FrameReader()
        self.ending = Ending()
        self.closed_sent = False
        try:
            self.sock.sendall(handshake(f"{host}:{port}", "/media-stream",
                                        twilio_signature(url) if signature is None else signature))
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise ConnectionError("EOF during handshake")
                head += chunk
            head, rest = head.split(b"\r\n\r\n", 1)
            _check_upgrade(head)
            self._handle(self.reader.feed(rest))
        except BaseException:
            self.sock.close()
            raise

    def _handle(self, frames: list[tuple[int, bytes]]) -> None:
        for opcode, payload in frames:
            if opcode == CLOSE and self.ending.server_code is None:
                self.ending.server_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.ending.server_closed_first = not self.closed_sent
                if not self.closed_sent:
                    self.closed_sent = True
                    self.send(close_frame(self.ending.server_code))
            elif opcode in (TEXT, BINARY):
                self.ending.messages += 1

    def send(self, frame: bytes) -> bool:
        if self.ending.eof:
            return False
        try:
            self.sock.sendall(frame)
            return True
        except OSError:  # reset or broken pipe: the server has gone
            return False

    def poll(self) -> None:
        """Take whatever the server has sent so far, without waiting."""
        self.sock.setblocking(False)
        try:
            while not self.ending.eof:
                data = self.sock.recv(65536)
                if not data:
                    self.ending.eof = True
                self._handle(self.reader.feed(data))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.ending.eof = True
        finally:
            self.sock.setblocking(True)

    def close(self, code: int = 1000, timeout: float = 10.0) -> Ending:
        """Close (unless the server did) and read until EOF, bounded by ``timeout``."""
        if not self.closed_sent and self.ending.server_code is None:
            self.closed_sent = True
            self.send(close_frame(code))
        deadline = time.monotonic() + timeout
        try:
            while not self.ending.eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the server never closed the connection")
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    self.ending.eof = True
                self._handle(self.reader.feed(data))
        finally:
            self.sock.close()
        return self.ending
