"""A write of a whole client frame straight to the agent's TCP socket, when it needs no wait.

Why: the agent leg sends a message per 20 ms caller frame, and on this stack
each went through trio-websocket's ``send_message`` (wsproto framing and
masking, its stream lock, trio's ``send_all``) inside ``AgentSocket``'s
shielded, bounded scope: ~150 µs of CPU per frame on the 2-core dev VM
against ~50 µs for the bare write (``bench/sendcost.py``).  Nearly always the
socket has room and nobody else is writing, so the frame can be framed here
and handed to the kernel in one non-blocking ``send``: nothing yields between
the checks and the write, so no cancel can land in between, and no scope is
needed.  Everything else (a TLS stream, another writer holding the stream
lock, a full socket buffer, a closing connection) takes the ordinary, safe
path: the caller falls back, or the unwritten tail is finished under the
caller's shielded, bounded scope.

trio-websocket has no public way to write to its stream, so this reads two of
its attributes (``_stream``, ``_stream_lock``; pinned trio-websocket 0.12).
If they are missing, :func:`fast_writer` returns ``None`` and nothing changes.
Frames carry no extension (trio-websocket's client negotiates none), so a
whole data message written here leaves wsproto's state where it was.
"""

from __future__ import annotations

import os
from typing import Any

import trio

#: The largest payload framed here (2-byte length form); bigger messages take trio-websocket's path.
MAX_FAST_PAYLOAD = 65535


def mask_frame(payload: bytes, opcode: int, key: bytes) -> bytes:
    """A complete (FIN) client frame: RFC 6455 §5.2, masked with ``key`` (4 bytes)."""
    n = len(payload)
    head = bytes((0x80 | opcode, 0x80 | n)) if n < 126 else bytes((0x80 | opcode, 0xFE, n >> 8, n & 0xFF))
    if not n:
        return head + key
    repeated = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(n, "little")
    return head + key + masked


class FastWriter:
    """Writes whole frames for one trio-websocket client connection over plain TCP."""

    def __init__(self, ws: Any, stream: trio.SocketStream, lock: trio.StrictFIFOLock) -> None:
        self.ws = ws
        self.stream = stream
        self.lock = lock
        self._tail = memoryview(b"")

    def try_write(self, message: str | bytes) -> int | None:
        """Frame and write what the kernel takes now; the bytes left to write, or ``None`` (use the safe path).

        On a return of 0 the frame is on the wire.  On a positive return the
        stream lock is *held* (taken here, with no yield since the check) and
        the caller must finish the tail with :meth:`finish` and release it.
        """
        if self.ws.closed is not None or self.lock.locked():
            return None
        if isinstance(message, str):
            payload, opcode = message.encode(), 0x1
        else:
            payload, opcode = message, 0x2
        if len(payload) > MAX_FAST_PAYLOAD:
            return None
        fd = self.stream.socket.fileno()  # -1 once closed: never write to a reused descriptor
        if fd < 0:
            return None
        frame = mask_frame(payload, opcode, os.urandom(4))
        try:
            # A plain non-blocking write (trio sets O_NONBLOCK); trio's own send
            # would first check for a cancel and then maybe wait.
            sent = os.write(fd, frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            return None  # the safe path reports the broken connection its own way
        if sent == len(frame):
            return 0
        self.lock.acquire_nowait()  # free a moment ago, nothing yielded since
        self._tail = memoryview(frame)[sent:]
        return len(self._tail)

    async def finish(self) -> None:
        """Write the tail :meth:`try_write` left (call inside a shielded, bounded scope), then release the lock."""
        try:
            await self.stream.send_all(self._tail)
        finally:
            self._tail = memoryview(b"")
            self.lock.release()


def fast_writer(ws: Any) -> FastWriter | None:
    """A :class:`FastWriter` for ``ws`` if it is trio-websocket over plain TCP, else ``None``."""
    stream = getattr(ws, "_stream", None)
    lock = getattr(ws, "_stream_lock", None)
    if not isinstance(stream, trio.SocketStream) or not isinstance(lock, trio.StrictFIFOLock):
        return None
    if not getattr(ws, "is_client", False):
        return None
    return FastWriter(ws, stream, lock)
