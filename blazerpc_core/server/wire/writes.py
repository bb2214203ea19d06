"""Writes that leave together: the transport every served connection writes through."""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingTransport:
    """A transport whose writes within one turn of the event loop leave together, in one send.

    grpclib writes each header block and DATA frame as soon as h2 produces it, so a unary
    answer costs three ``send`` system calls (headers, message, trailers), and the calls
    answered in one turn of the loop several more. Joining them is the largest single
    saving on the request path; the bytes leave at the start of the next turn, or at once
    when a connection's last call in flight has answered (``WireStream.send_headers``).
    Flow control is unchanged: the real transport still buffers and pauses the protocol.
    """

    __slots__ = ("_chunks", "_loop", "_scheduled", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._chunks: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._chunks.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._chunks:
            return
        chunks, self._chunks = self._chunks, []
        if not self.transport.is_closing():
            self.transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._chunks.clear()
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)
