"""A call's messages on the wire: gRPC framing, the limits on each message, gzip.

:class:`WireStream` is the HTTP/2 stream of one call with what the wire layer decided for
it (its encodings); :func:`receive_message` and :func:`send_messages` mirror grpclib
0.4.9's ``Stream.recv_message`` / ``send_message`` with those decisions and limits applied.
"""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from collections.abc import Sequence, Sized
from typing import Any, cast

from grpclib.exceptions import GRPCError
from grpclib.metadata import Deadline
from grpclib.protocol import Connection
from grpclib.protocol import Stream as H2Stream
from grpclib.server import Stream
from h2.connection import H2Connection
from hpack import NeverIndexedHeaderTuple

from blazerpc_core.errors import BlazeError, DeadlineExceeded, InvalidArgument, ResourceExhausted
from blazerpc_core.server.wire.limits import ByteBudget, WireLimits
from blazerpc_core.server.wire.writes import CoalescingTransport

#: The gRPC message prefix: compressed flag, big-endian length.
PREFIX = struct.Struct(">?I")
#: Responses smaller than this go out uncompressed even when compressing: gzip's own
#: header and trailer (18 bytes) would outweigh the saving.
COMPRESS_MIN_BYTES = 1024
#: gzip level for responses: model outputs are mostly numbers, which compress little, so
#: the fastest level gets nearly all of the saving at a fraction of the CPU.
GZIP_LEVEL = 1
#: Trailers whose values are unique per call; see WireStream.send_headers.
UNIQUE_HEADERS = frozenset({"x-request-id"})


class WireStream(H2Stream):
    """grpclib's HTTP/2 stream plus what the wire layer decided about this call."""

    def __init__(
        self, connection: Connection, h2_connection: H2Connection, writes: CoalescingTransport, *,
        stream_id: int, limits: WireLimits, budget: ByteBudget, gzip_request: bool, compress: bool,
        served: Sized,
    ) -> None:
        super().__init__(connection, h2_connection, cast(asyncio.Transport, writes), stream_id=stream_id)
        #: The connection's writes (joined per loop turn), which this stream may send at once.
        self.writes = writes
        #: The streams this connection is serving now, this one included.
        self.served = served
        self.limits = limits
        #: The server-wide budget of request bytes being received.
        self.budget = budget
        #: The client declared ``grpc-encoding: gzip``: flagged messages are gzip.
        self.gzip_request = gzip_request
        #: Responses are gzip-compressed (``grpc-encoding: gzip`` goes out with the headers).
        self.compress = compress
        #: When (monotonic) a client reset counts as giving up on the call's own deadline
        #: rather than as a rapid reset; None without a ``grpc-timeout``.
        self.gives_up_at: float | None = None
        #: The call's deadline counted from when its headers arrived; None without a ``grpc-timeout``.
        self.deadline: Deadline | None = None

    async def send_headers(self, headers: list[tuple[str, str]], end_stream: bool = False) -> None:
        """Every response header block (``:status`` first) says which encodings the server accepts.

        The request id differs on every call, so it goes out as an HPACK literal never
        indexed: indexing it would fill the connection's header table with entries nobody
        reuses and make every later lookup in it slower. Error messages are indexed: most
        repeat (a refusal under overload is the same text thousands of times a second, and
        an indexed repeat is one byte instead of a Huffman-coded literal: never indexing
        them cut overload goodput from 0.98 to 0.88), and a one-off message only takes a
        slot of the bounded table until newer entries push it out.
        """
        if headers and headers[0][0] == ":status":
            headers = [*headers, ("grpc-accept-encoding", "gzip")]
            if self.compress and not end_stream:
                headers.append(("grpc-encoding", "gzip"))
        if end_stream:
            # A HeaderTuple subclass, not a (name, value, True) triple: h2 rebuilds plain
            # tuples as pairs, which dropped the flag and indexed every request id.
            headers = [NeverIndexedHeaderTuple(n, v) if n in UNIQUE_HEADERS else (n, v) for n, v in headers]  # type: ignore[misc]
        await super().send_headers(headers, end_stream)
        if end_stream and len(self.served) <= 1:
            # The last answer this connection owes goes out now rather than at the start of the
            # next loop turn: nothing else could join its send, and the call's own clean-up
            # (middleware, accounting) would otherwise run before its bytes leave.
            self.writes.flush()


class GzipStream(WireStream):
    """A stream whose client compresses: grpclib's own ``recv_message`` (health, reflection) sees plain messages.

    grpclib refuses flagged messages; here the first read of a message (its prefix) reads
    and inflates the whole message, and answers with the prefix of the inflated one.
    Inference calls read the buffer directly instead (``receive_message``).
    """

    _inflated: bytes | None = None

    async def recv_data(self, size: int) -> bytes:
        if self._inflated is not None:
            data, self._inflated = self._inflated, None
            return data
        data = await self.buffer.read(size)
        if size != 5 or len(data) != 5 or not data[0]:
            return data
        limit = self.limits.max_message_bytes
        length = int.from_bytes(data[1:], "big")
        try:
            if length > limit:
                raise ResourceExhausted(f"request message is {length} bytes, over the server's limit of {limit} bytes")
            self._inflated = inflate(await self.buffer.read(length), limit, "this rpc")
        except BlazeError as exc:  # grpclib answers only its own error type with a status
            raise GRPCError(exc.status, exc.message) from None
        return PREFIX.pack(False, len(self._inflated))


async def receive_message(
    stream: Stream[Any, Any], *, rpc: str, max_message_bytes: int, first: bool = False
) -> Any:
    """The next request message of ``stream``, decoded, or None when the client has sent them all.

    grpclib's ``Stream.recv_message``, plus: an oversize message is refused from its 5-byte
    prefix, before its body is buffered; its declared length is reserved from the server's
    in-flight budget until it is decoded (or fails); gzip messages are inflated with a
    bound, so a zip bomb stops at ``max_message_bytes``. With ``first`` (the one request of a
    unary or server-streaming call) the whole message must arrive within the first-message
    timeout of the call's headers.
    """
    h2_stream = stream._stream
    wire = h2_stream if isinstance(h2_stream, WireStream) else None
    timeout = wire.limits.first_message_timeout if wire is not None and first else 0.0
    # A stream the client has ended holds all it will ever hold: reading it cannot stall, so
    # the usual unary call (HEADERS and DATA in one write) pays for no timer.
    if timeout > 0 and not h2_stream.buffer._eof:
        left = (h2_stream.created or time.monotonic()) + timeout - time.monotonic()
        try:
            async with asyncio.timeout(left):
                message = await _read(stream, wire, rpc, max_message_bytes)
        except TimeoutError:
            raise DeadlineExceeded(
                f"the request message of {rpc} did not arrive within {timeout:g}s of the call's start "
                f"(--first-message-timeout)"
            ) from None
    else:
        message = await _read(stream, wire, rpc, max_message_bytes)
    if message is None:
        return None
    (message,) = await stream._dispatch.recv_message(message)
    stream._messages_received += 1
    connection = h2_stream.connection
    connection.messages_received += 1
    connection.last_message_received = time.monotonic()
    return message


async def _read(stream: Stream[Any, Any], wire: WireStream | None, rpc: str, limit: int) -> Any:
    h2_stream = stream._stream
    prefix = await h2_stream.buffer.read(5)  # not recv_data: a GzipStream would inflate unbudgeted
    if not prefix:
        return None
    compressed, size = PREFIX.unpack(prefix)
    if size > limit:
        raise ResourceExhausted(
            f"request message to {rpc} is {size} bytes, over the server's limit of {limit} bytes (--max-message-mb)"
        )
    if compressed and (wire is None or not wire.gzip_request):
        raise InvalidArgument(f"request message to {rpc} is flagged compressed, but the call declared no "
                              f"grpc-encoding")
    budget = wire.budget if wire is not None else None
    if budget is not None and not budget.reserve(size):
        raise ResourceExhausted(
            f"request message to {rpc} is {size} bytes; the server is already receiving {budget.used} bytes of "
            f"requests, and its limit is {budget.limit} bytes (--max-inflight-mb). Retry later"
        )
    try:
        body = await h2_stream.buffer.read(size)
        if compressed:
            body = inflate(body, limit, rpc)
        return stream._codec.decode(body, stream._recv_type)
    finally:
        if budget is not None:
            budget.release(size)


def inflate(data: bytes, limit: int, rpc: str) -> bytes:
    """gzip ``data`` inflated, never to more than ``limit`` bytes (gzip members may follow each other)."""
    chunks: list[bytes] = []
    total = 0
    while True:
        inflater = zlib.decompressobj(wbits=31)
        try:
            chunk = inflater.decompress(data, limit - total + 1)
        except zlib.error as exc:
            raise InvalidArgument(f"request message to {rpc} is not valid gzip: {exc}") from None
        total += len(chunk)
        if total > limit:
            raise ResourceExhausted(
                f"request message to {rpc} inflates to more than {limit} bytes, over the server's limit "
                f"(--max-message-mb)"
            )
        if not inflater.eof:
            raise InvalidArgument(f"request message to {rpc} is truncated gzip")
        chunks.append(chunk)
        data = inflater.unused_data
        if not data:
            return b"".join(chunks)


def gzip_body(body: bytes) -> bytes:
    deflater = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return deflater.compress(body) + deflater.flush()


async def send_message(stream: Stream[Any, Any], message: Any) -> None:
    """Send one response message, gzip-compressed if this call compresses its responses."""
    h2_stream = stream._stream
    if isinstance(h2_stream, WireStream) and h2_stream.compress:
        await send_messages(stream, [message])
    else:
        await stream.send_message(message)


async def send_messages(stream: Stream[Any, Any], messages: Sequence[Any]) -> None:
    """grpclib's ``Stream.send_message`` for several messages in one DATA write.

    Mirrors grpclib 0.4.9 ``server.Stream.send_message`` (events, counters) and
    ``stream.send_message`` (the 5-byte gRPC prefix); gRPC lets one DATA frame carry
    several messages.
    """
    if not stream._send_initial_metadata_done:
        await stream.send_initial_metadata()
    h2_stream = stream._stream
    compress = isinstance(h2_stream, WireStream) and h2_stream.compress
    chunks = []
    for message in messages:
        (message,) = await stream._dispatch.send_message(message)
        body = stream._codec.encode(message, stream._send_type)
        flag = compress and len(body) >= COMPRESS_MIN_BYTES
        if flag:
            body = gzip_body(body)
        chunks.append(PREFIX.pack(flag, len(body)))
        chunks.append(body)
    await h2_stream.send_data(b"".join(chunks))
    stream._send_message_done = True
    stream._messages_sent += len(messages)
    connection = h2_stream.connection
    connection.messages_sent += len(messages)
    connection.last_message_sent = time.monotonic()
