"""The HTTP/2 layer under grpclib: connections, their limits, and gRPC message framing.

Every use of grpclib and h2 internals that touches connections or message framing lives
here, so an upgrade has one module to check. Written against grpclib 0.4.9 (pinned
``grpclib>=0.4.9,<0.5``) and h2 4.x: it mirrors ``grpclib.protocol.H2Protocol.connection_made``
and ``EventsProcessor``, ``grpclib.server.Server._protocol_factory`` and ``start``, and
``grpclib.server.Stream.recv_message`` / ``send_message``.

What it guards against (each limit is listed in docs/security.md, "Connection limits"):

* one stalled stream blocking its connection: a stream's receive window is a sixteenth of
  the connection's;
* rapid reset (CVE-2023-44487): client resets of unfinished streams are rate limited per
  connection, answered GOAWAY ENHANCE_YOUR_CALM and a close;
* unbounded request buffering: a server-wide budget of request bytes being read, and a
  closed connection's handler released at once;
* idle, half-open and never-speaking connections: a connection cap, a handshake timeout,
  an idle timeout, and a first-message timeout for calls that take one request;
* a stream over SETTINGS_MAX_CONCURRENT_STREAMS or an oversize header list killing the
  whole connection: refused per stream; only past a hard cap does the connection go, and
  then with its GOAWAY flushed.

It also speaks gRPC compression (gzip requests, ``grpc-accept-encoding``, gzip responses)
and sends the two-step GOAWAY of a graceful shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import ssl as _ssl
import struct
import time
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpclib.server
from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.metadata import encode_grpc_message
from grpclib.protocol import Connection, EventsProcessor, H2Protocol, _set_nodelay
from grpclib.protocol import Stream as H2Stream
from grpclib.server import Stream
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import PingAckReceived, RemoteSettingsChanged, RequestReceived, StreamReset
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings
from hpack import hpack as hpack_hpack
from hpack import table as hpack_table
from hyperframe.frame import Frame, GoAwayFrame, SettingsFrame

from blazerpc_core.errors import BlazeError, DeadlineExceeded, InvalidArgument, RegistrationError, ResourceExhausted
from blazerpc_core.settings import ServeSettings

log = logging.getLogger("blazerpc.server")

MiB = 1024 * 1024
#: The HTTP/2 default window, which every connection starts with (RFC 9113 section 6.9.2).
_DEFAULT_WINDOW = 65535
_MAX_STREAM_ID = 2**31 - 1
#: Opaque data of the PING that separates the two GOAWAY frames of a graceful shutdown.
_GOAWAY_PING = b"blzgoawy"
#: The gRPC message prefix: compressed flag, big-endian length.
_PREFIX = struct.Struct(">?I")
#: Responses smaller than this go out uncompressed even when compressing: gzip's own
#: header and trailer (18 bytes) would outweigh the saving.
COMPRESS_MIN_BYTES = 1024
#: gzip level for responses: model outputs are mostly numbers, which compress little, so
#: the fastest level gets nearly all of the saving at a fraction of the CPU.
GZIP_LEVEL = 1
#: Seconds between two warnings about refused or throttled connections.
LOG_EVERY = 5.0
#: Trailers whose values are (nearly) unique per call; see WireStream.send_headers.
_UNIQUE_HEADERS = frozenset({"x-request-id", "grpc-message"})


class _Quiet:
    """A logger that drops debug records without even asking whether it should."""

    def debug(self, *args: object, **kwargs: object) -> None:
        return None


def quiet_hpack() -> None:
    """hpack logs at DEBUG ~30 times per call (every integer it encodes or decodes); unless DEBUG
    logging is on for it, point its module loggers at a stub that skips even the level check."""
    if logging.getLogger("hpack").isEnabledFor(logging.DEBUG):
        return
    for module in (hpack_hpack, hpack_table):
        setattr(module, "log", _Quiet())  # noqa: B010 (mypy does not know the module has a log)


@dataclass(frozen=True)
class WireLimits:
    """Connection and framing limits of one server process (see docs/security.md)."""

    #: Open connections (handshaking ones included); more are closed at once.
    max_connections: int = 1000
    #: Seconds from accept to a completed TLS handshake and the client's HTTP/2 preface and SETTINGS.
    handshake_timeout: float = 10.0
    #: Seconds a connection may stay without an open stream before GOAWAY and close (0: never).
    idle_timeout: float = 300.0
    #: Seconds from a unary or server-streaming call's headers to its whole request message (0: no limit).
    first_message_timeout: float = 30.0
    #: Bytes of request messages being received at once, over all connections.
    max_inflight_bytes: int = 256 * MiB
    #: Largest request message, compressed or inflated (``--max-message-mb``).
    max_message_bytes: int = 64 * MiB
    #: SETTINGS_MAX_CONCURRENT_STREAMS; a stream over it is refused (RST_STREAM REFUSED_STREAM).
    max_concurrent_streams: int = 100
    #: SETTINGS_MAX_HEADER_LIST_SIZE; a larger request header list is refused RESOURCE_EXHAUSTED.
    max_header_list_bytes: int = 64 * 1024
    #: Client resets of unfinished streams (and refused streams) a connection may average per
    #: second, in bursts of twice that; more get GOAWAY ENHANCE_YOUR_CALM (0: no limit).
    max_resets_per_second: float = 100.0
    #: Receive windows. A stream gets 1/16 of its connection's window, so a stream whose
    #: reader stalls holds at most that share and the other calls keep flowing.
    stream_window: int = 1 * MiB
    connection_window: int = 16 * MiB
    #: ``gzip``: compress responses for clients that accept gzip; ``identity``: only for
    #: clients that compressed their own request.
    compression: str = "identity"
    #: Seconds the graceful GOAWAY waits for the client's PING acknowledgement.
    goaway_ping_timeout: float = 1.0

    @property
    def stream_hard_cap(self) -> int:
        """Streams open at once past which h2 fails the whole connection (all frames of one read are parsed first)."""
        return 10 * self.max_concurrent_streams

    @property
    def header_list_hard_cap(self) -> int:
        """Decoded header bytes past which HPACK decoding stops and the connection goes (ENHANCE_YOUR_CALM)."""
        return 16 * self.max_header_list_bytes

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> WireLimits:
        """The limits ``settings`` asks for, checked; a bad combination is refused naming its options."""
        if settings.compression not in ("gzip", "identity"):
            raise RegistrationError(f"--compression must be gzip or identity, not {settings.compression!r}")
        if settings.max_inflight_mb < settings.max_message_mb:
            raise RegistrationError(
                f"--max-inflight-mb ({settings.max_inflight_mb:g}) must be at least --max-message-mb "
                f"({settings.max_message_mb:g}), or the largest allowed message could never be received"
            )
        for name in ("handshake_timeout", "idle_timeout", "first_message_timeout", "max_resets_per_second"):
            if getattr(settings, name) < 0:
                raise RegistrationError(f"--{name.replace('_', '-')} must not be negative")
        if settings.max_concurrent_streams < 1 or (settings.max_connections or 1) < 1:
            raise RegistrationError("--max-concurrent-streams and --max-connections must be at least 1")
        return cls(
            max_connections=settings.max_connections or default_max_connections(),
            handshake_timeout=settings.handshake_timeout,
            idle_timeout=settings.idle_timeout,
            first_message_timeout=settings.first_message_timeout,
            max_inflight_bytes=int(settings.max_inflight_mb * MiB),
            max_message_bytes=settings.max_message_bytes,
            max_concurrent_streams=settings.max_concurrent_streams,
            max_resets_per_second=settings.max_resets_per_second,
            compression=settings.compression,
        )


def default_max_connections() -> int:
    """Three quarters of the open-file limit, at most 10,000: the rest stays for the process's own files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, min(10_000, soft * 3 // 4))


@dataclass(frozen=True)
class WireStats:
    """What a :class:`WireServer` holds right now, and what it refused so far."""

    connections: int
    handlers: int
    inflight_bytes: int
    refused_connections: int
    calmed_connections: int


class ByteBudget:
    """Request-message bytes being received, server-wide; reserved from the length prefix."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def release(self, size: int) -> None:
        self.used -= size


class _Throttled:
    """A warning logged at most once per ``LOG_EVERY`` seconds, counting the ones held back."""

    def __init__(self) -> None:
        self._last = -LOG_EVERY
        self._held = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < LOG_EVERY:
            self._held += 1
            return
        held, self._held, self._last = self._held, 0, now
        log.warning(message + (f" ({held} more since the last such warning)" if held else ""), *args)


# -- streams and connections ----------------------------------------------------------------


class WireStream(H2Stream):
    """grpclib's HTTP/2 stream plus what the wire layer decided about this call."""

    def __init__(
        self, connection: Connection, h2_connection: H2Connection, transport: asyncio.Transport, *,
        stream_id: int, server: WireServer, gzip_request: bool, compress: bool,
    ) -> None:
        super().__init__(connection, h2_connection, transport, stream_id=stream_id)
        self.server = server
        #: The client declared ``grpc-encoding: gzip``: flagged messages are gzip.
        self.gzip_request = gzip_request
        #: Responses are gzip-compressed (``grpc-encoding: gzip`` goes out with the headers).
        self.compress = compress

    async def send_headers(self, headers: list[tuple[str, str]], end_stream: bool = False) -> None:
        """Every response header block (``:status`` first) says which encodings the server accepts.

        Values that differ on every call (a request id, an error message) are sent as
        HPACK literals never indexed: indexing them would fill the connection's header
        table with entries nobody reuses and make every later lookup in it slower.
        """
        if headers and headers[0][0] == ":status":
            headers = [*headers, ("grpc-accept-encoding", "gzip")]
            if self.compress and not end_stream:
                headers.append(("grpc-encoding", "gzip"))
        if end_stream:
            headers = [(n, v, True) if n in _UNIQUE_HEADERS else (n, v) for n, v in headers]  # type: ignore[misc]
        await super().send_headers(headers, end_stream)


class _GzipStream(WireStream):
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
        limit = self.server.limits.max_message_bytes
        length = int.from_bytes(data[1:], "big")
        try:
            if length > limit:
                raise ResourceExhausted(f"request message is {length} bytes, over the server's limit of {limit} bytes")
            self._inflated = _inflate(await self.buffer.read(length), limit, "this rpc")
        except BlazeError as exc:  # grpclib answers only its own error type with a status
            raise GRPCError(exc.status, exc.message) from None
        return _PREFIX.pack(False, len(self._inflated))


class CoalescingTransport:
    """A transport whose writes within one turn of the event loop leave together, in one send.

    grpclib writes each header block and DATA frame as soon as h2 produces it, so a unary
    answer costs three ``send`` system calls (headers, message, trailers), and the calls
    answered in one turn of the loop several more. Joining them is the largest single
    saving on the request path; the bytes leave at the start of the next turn. Flow
    control is unchanged: the real transport still buffers and pauses the protocol.
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


class WireConnection(Connection):
    """grpclib's connection state, able to write frames h2 must not know about."""

    def write_frame(self, frame: Frame) -> None:
        """Write ``frame`` after whatever h2 has queued, bypassing h2's state machine.

        h2 goes to CLOSED once *it* sends GOAWAY and then refuses to send anything on the
        streams still open, so a graceful GOAWAY is written here instead.
        """
        self.flush()
        if not self.is_closing():
            self._transport.write(frame.serialize())


class _Handler(grpclib.server.Handler):
    """grpclib's per-connection handler, releasable as soon as its connection closes."""

    def cancel(self, stream: H2Stream) -> None:
        task = self._tasks.pop(stream, None)
        if task is not None:
            task.cancel()
            self._cancelled.add(task)

    def release(self) -> None:
        """Drop every task (and through them every stream and buffer) of a closed connection."""
        self._tasks.clear()
        self._cancelled.clear()


class WireProcessor(EventsProcessor):
    """grpclib's h2 event processor, refusing single streams where grpclib would lose the connection."""

    def __init__(self, handler: _Handler, connection: WireConnection, protocol: WireProtocol) -> None:
        super().__init__(handler, connection)
        self.protocol = protocol
        self.h2 = connection._connection

    def register(self, stream: H2Stream) -> Callable[[], None]:
        release = super().register(stream)
        protocol = self.protocol
        protocol.idle_since = None

        def release_stream() -> None:
            release()
            protocol.stream_released()

        return release_stream

    def process_request_received(self, event: RequestReceived) -> None:
        protocol, limits, stream_id = self.protocol, self.protocol.limits, event.stream_id
        if protocol.last_stream_id is not None and stream_id > protocol.last_stream_id:
            self._reset(stream_id, ErrorCodes.REFUSED_STREAM)  # after the final GOAWAY
            return
        h2_stream = self.h2.streams.get(stream_id)
        if h2_stream is None or h2_stream.closed:
            protocol.misbehaved("streams reset before they were served")  # HEADERS and RST_STREAM in one read
            return
        if len(self.streams) >= limits.max_concurrent_streams:
            self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
            protocol.misbehaved("streams opened over SETTINGS_MAX_CONCURRENT_STREAMS")
            return
        headers = cast(list[tuple[str, str]], event.headers)
        size, encoding, accept = 0, None, ""
        for name, value in headers:
            size += len(name) + len(value) + 32  # as SETTINGS_MAX_HEADER_LIST_SIZE counts (RFC 9113 6.5.2)
            if name == "grpc-encoding":
                encoding = value
            elif name == "grpc-accept-encoding":
                accept = value
        if size > limits.max_header_list_bytes:
            self._answer(stream_id, Status.RESOURCE_EXHAUSTED,
                         f"request headers are {size} bytes, over the server's limit of "
                         f"{limits.max_header_list_bytes} bytes (SETTINGS_MAX_HEADER_LIST_SIZE)")
            return
        gzip_request = encoding == "gzip"
        if encoding not in (None, "identity", "gzip"):
            self._answer(stream_id, Status.UNIMPLEMENTED,
                         f"grpc-encoding {encoding!r} is not supported; this server accepts gzip and identity")
            return
        compress = (gzip_request or limits.compression == "gzip") and "gzip" in (
            item.strip() for item in accept.split(",")
        )
        stream = (_GzipStream if gzip_request else WireStream)(
            self.connection, self.h2, self.connection._transport, stream_id=stream_id,
            server=protocol.server, gzip_request=gzip_request, compress=compress,
        )
        self.handler.accept(stream, headers, self.register(stream))

    def process_stream_reset(self, event: StreamReset) -> None:
        unfinished = event.remote_reset and event.stream_id in self.streams
        super().process_stream_reset(event)
        if unfinished:
            self.protocol.misbehaved("streams reset before the server finished them")

    def process_remote_settings_changed(self, event: RemoteSettingsChanged) -> None:
        self.protocol.handshake_done()
        super().process_remote_settings_changed(event)

    def process_ping_ack_received(self, event: PingAckReceived) -> None:
        if event.ping_data == _GOAWAY_PING:
            self.protocol.final_goaway()
        else:
            super().process_ping_ack_received(event)

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        with contextlib.suppress(ProtocolError):  # the client may have reset it already
            self.h2.reset_stream(stream_id, code)

    def _answer(self, stream_id: int, status: Status, message: str) -> None:
        """A trailers-only response decided from the headers alone, sent without starting a handler."""
        headers = [
            (":status", "200"), ("content-type", "application/grpc"), ("grpc-status", str(status.value)),
            ("grpc-message", encode_grpc_message(message)), ("grpc-accept-encoding", "gzip"),
        ]
        with contextlib.suppress(ProtocolError):
            self.h2.send_headers(stream_id, headers, end_stream=True)
            h2_stream = self.h2.streams.get(stream_id)
            if h2_stream is not None and not h2_stream.closed:
                self.h2.reset_stream(stream_id, ErrorCodes.NO_ERROR)  # the request body is not wanted


class WireProtocol(H2Protocol):
    """One client connection: grpclib's protocol with the limits of :class:`WireLimits`."""

    connection: WireConnection
    processor: WireProcessor

    def __init__(self, handler: _Handler, config: Configuration, h2_config: H2Configuration, *,
                 server: WireServer) -> None:
        super().__init__(handler, config, h2_config)
        self.server = server
        self.limits = server.limits
        self.accepted_at = time.monotonic()
        self.made = self.closed = self.handshaken = False
        #: Streams above this id are refused; set by the final GOAWAY.
        self.last_stream_id: int | None = None
        #: Loop time since when no stream has been open; None while one is.
        self.idle_since: float | None = None
        self._tokens = 2.0 * self.limits.max_resets_per_second
        self._tokens_at = self.accepted_at
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._peer = "unknown peer"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True
        sock = transport.get_extra_info("socket")
        if sock is not None:
            _set_nodelay(sock)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self._peer = f"{peer[0]}:{peer[1]}"
        limits = self.limits
        h2 = H2Connection(config=self.h2_config)
        # The first SETTINGS frame advertises the limits the processor enforces per stream...
        h2.local_settings = _settings(limits, limits.max_concurrent_streams)
        h2.initiate_connection()
        # ...while h2 itself only fails the connection past the hard caps. Its HPACK decoder
        # must finish every header block up to there, or the connection's state would diverge.
        h2.local_settings = _settings(limits, limits.stream_hard_cap)
        h2.decoder.max_header_list_size = limits.header_list_hard_cap
        if limits.connection_window > _DEFAULT_WINDOW:
            h2.increment_flow_control_window(limits.connection_window - _DEFAULT_WINDOW)
        writes = CoalescingTransport(cast(asyncio.Transport, transport), asyncio.get_running_loop())
        self.connection = WireConnection(h2, cast(asyncio.Transport, writes), config=self.config)
        self.connection.flush()
        self.connection.initialize()
        self.processor = WireProcessor(cast(_Handler, self.handler), self.connection, self)
        loop = asyncio.get_running_loop()
        if limits.handshake_timeout > 0:
            remaining = self.accepted_at + limits.handshake_timeout - time.monotonic()
            self._timers["handshake"] = loop.call_later(max(remaining, 0.0), self._handshake_expired)
        self.idle_since = loop.time()
        self._arm_idle()
        if self.server.going_away:  # made after the server stopped listening
            self.goaway(graceful=True)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.connection.feed(data)
        except ProtocolError:
            log.debug("HTTP/2 protocol error from %s", self._peer, exc_info=True)
            self.connection.flush()  # the GOAWAY h2 queued, so the client learns why
            self.close("protocol error")
            return
        self.connection.flush()
        for event in events:
            if self.closed:
                return
            self.processor.process(event)
        if not self.closed:
            self.connection.flush()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self._cancel_timers()
        super().connection_lost(exc)
        self.server._forget(self)

    # -- decisions ---------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """Close now: the transport flushes what was written, running handlers are cancelled."""
        if self.closed:
            return
        self.closed = True
        self._cancel_timers()
        self.processor.close(reason)

    def close_now(self) -> None:
        """GOAWAY through h2 (last stream id: the highest seen), then close."""
        if not self.made or self.closed:
            return
        with contextlib.suppress(ProtocolError):
            self.connection._connection.close_connection()
        self.connection.flush()
        self.close("server shutting down")

    def handshake_done(self) -> None:
        self.handshaken = True
        timer = self._timers.pop("handshake", None)
        if timer is not None:
            timer.cancel()

    def misbehaved(self, what: str) -> None:
        """Spend one token of the reset budget; an empty bucket ends the connection."""
        rate = self.limits.max_resets_per_second
        if not rate:
            return
        now = time.monotonic()
        self._tokens = min(2.0 * rate, self._tokens + (now - self._tokens_at) * rate) - 1.0
        self._tokens_at = now
        if self._tokens >= 0 or self.closed:
            return
        self.server.calmed_connections += 1
        self.server._calm_log.warn(
            "closed the connection from %s with GOAWAY ENHANCE_YOUR_CALM: %s faster than "
            "--max-resets-per-second %g allows", self._peer, what, rate,
        )
        with contextlib.suppress(ProtocolError):
            self.connection._connection.close_connection(
                error_code=ErrorCodes.ENHANCE_YOUR_CALM, additional_data=b"too many stream resets"
            )
        self.connection.flush()
        self.close("too many stream resets")

    def goaway(self, graceful: bool = True) -> None:
        """Ask the client to open no more streams here; open ones finish, then the connection closes.

        Graceful: GOAWAY with the highest possible stream id and a PING, then, when the
        PING is acknowledged (the client has seen the first GOAWAY, so nothing it sends
        later is in flight) or after ``goaway_ping_timeout``, GOAWAY with the real last id.
        """
        if not self.made or self.closed or self.last_stream_id is not None or "goaway" in self._timers:
            return
        if not graceful:
            self.final_goaway()
            return
        self.connection.write_frame(GoAwayFrame(0, last_stream_id=_MAX_STREAM_ID, error_code=ErrorCodes.NO_ERROR))
        try:
            self.connection._connection.ping(_GOAWAY_PING)
        except ProtocolError:  # the client already said GOAWAY itself
            self.final_goaway()
            return
        self.connection.flush()
        self._timers["goaway"] = asyncio.get_running_loop().call_later(
            self.limits.goaway_ping_timeout, self.final_goaway
        )

    def final_goaway(self) -> None:
        """GOAWAY with the last stream id this connection will serve; close once those are done."""
        if self.closed or self.last_stream_id is not None:
            return
        timer = self._timers.pop("goaway", None)
        if timer is not None:
            timer.cancel()
        self.last_stream_id = self.connection._connection.highest_inbound_stream_id
        self.connection.write_frame(
            GoAwayFrame(0, last_stream_id=self.last_stream_id, error_code=ErrorCodes.NO_ERROR)
        )
        if not self.processor.streams:
            self.close("server going away")

    def stream_released(self) -> None:
        if self.processor.streams or self.closed:
            return
        loop = asyncio.get_running_loop()
        if self.last_stream_id is not None:
            # Soon, not now: closing cancels the handler's tasks, this call's own among them.
            loop.call_soon(self.close, "server going away")
            return
        self.idle_since = loop.time()
        self._arm_idle()

    # -- timers ------------------------------------------------------------------------------

    def _handshake_expired(self) -> None:
        self._timers.pop("handshake", None)
        if not self.handshaken:
            log.info("closed the connection from %s: no HTTP/2 preface and SETTINGS within %gs "
                     "(--handshake-timeout)", self._peer, self.limits.handshake_timeout)
            self.close("handshake timeout")

    def _arm_idle(self) -> None:
        """One timer per connection, re-armed lazily: calls coming and going do not touch it."""
        if self.limits.idle_timeout > 0 and "idle" not in self._timers and self.idle_since is not None:
            loop = asyncio.get_running_loop()
            self._timers["idle"] = loop.call_at(self.idle_since + self.limits.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        self._timers.pop("idle", None)
        if self.closed or self.idle_since is None:
            return
        if asyncio.get_running_loop().time() - self.idle_since < self.limits.idle_timeout:
            self._arm_idle()
            return
        log.debug("closing the connection from %s: idle for %gs (--idle-timeout)", self._peer,
                  self.limits.idle_timeout)
        self.close_now()

    def _cancel_timers(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


class _Refused(H2Protocol):
    """A connection over ``max_connections``: told GOAWAY and closed as soon as it is made.

    An H2Protocol only in type (grpclib's factory must return one); it keeps no state.
    """

    def __init__(self, server: WireServer) -> None:  # no super().__init__(): nothing of grpclib's is used
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        goaway = GoAwayFrame(0, last_stream_id=0, error_code=ErrorCodes.NO_ERROR,
                             additional_data=b"connection limit reached")
        cast(asyncio.Transport, transport).write(SettingsFrame(0).serialize() + goaway.serialize())
        transport.close()
        peer = transport.get_extra_info("peername")
        self.server._refused(f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unknown peer")

    def data_received(self, data: bytes) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        pass


def _settings(limits: WireLimits, max_streams: int) -> Settings:
    return Settings(client=False, initial_values={
        SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
        SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_bytes,
        SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window,
    })


# -- the server -----------------------------------------------------------------------------


class WireServer(grpclib.server.Server):
    """grpclib's server with :class:`WireLimits` on every connection, and a live set of them.

    ``Server.close()`` stops listening and cancels handlers but leaves connections open;
    :meth:`goaway` and :meth:`close_all` end them the HTTP/2 way.
    """

    def __init__(self, services: Collection[Any], *, limits: WireLimits | None = None) -> None:
        self.limits = limits or WireLimits()
        super().__init__(services, config=Configuration(
            http2_connection_window_size=self.limits.connection_window,
            http2_stream_window_size=self.limits.stream_window,
        ))
        self.budget = ByteBudget(self.limits.max_inflight_bytes)
        #: Open connections, handshaking ones included.
        self.connections: set[WireProtocol] = set()
        self.refused_connections = 0
        self.calmed_connections = 0
        self._tls = False
        self._ssl: _ssl.SSLContext | None = None
        #: Set by :meth:`stop_listening`: connections made from now on are told GOAWAY once made.
        self.going_away = False
        self._adopting: set[asyncio.Task[None]] = set()
        self._refusal_log = _Throttled()
        self._calm_log = _Throttled()
        self._releasing: set[asyncio.Task[None]] = set()
        self._no_connections = asyncio.Event()
        self._no_connections.set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop serving the connections; call :meth:`goaway` from it (``call_soon_threadsafe``)."""
        return self._loop

    def stats(self) -> WireStats:
        return WireStats(
            connections=len(self.connections), handlers=len(self._handlers), inflight_bytes=self.budget.used,
            refused_connections=self.refused_connections, calmed_connections=self.calmed_connections,
        )

    def _protocol_factory(self) -> H2Protocol:
        if len(self.connections) >= self.limits.max_connections:
            return _Refused(self)
        handler = _Handler(self._mapping, self._codec, self._status_details_codec, self.__dispatch__)
        self._handlers.add(handler)
        protocol = WireProtocol(handler, self._config, self._h2_config, server=self)
        self.connections.add(protocol)
        self._no_connections.clear()
        if self._tls:
            # A failed TLS handshake never reaches the protocol; forget it once asyncio has given up.
            self._loop.call_later(self._tls_handshake_timeout() + 1.0, self._forget_unmade, protocol)
        return protocol

    async def start(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        path: str | None = None,
        family: socket.AddressFamily = socket.AF_UNSPEC,
        flags: socket.AddressInfo = socket.AI_PASSIVE,
        sock: socket.socket | None = None,
        backlog: int = 100,
        ssl: _ssl.SSLContext | None = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
    ) -> None:
        """grpclib's ``start``; with TLS, the handshake is bounded by ``handshake_timeout``."""
        quiet_hpack()
        if ssl is None:
            await super().start(host, port, path=path, family=family, flags=flags, sock=sock, backlog=backlog,
                                reuse_address=reuse_address, reuse_port=reuse_port)
            return
        if self._server is not None:
            raise RuntimeError("Server is already started")
        self._tls = True
        self._ssl = ssl
        timeout = self._tls_handshake_timeout()
        loop: Any = self._loop  # create_server's overloads split host/port from sock; grpclib ignores them too
        if path is not None:
            self._server = await loop.create_unix_server(
                self._protocol_factory, path, sock=sock, backlog=backlog, ssl=ssl, ssl_handshake_timeout=timeout,
            )
        else:
            self._server = await loop.create_server(
                self._protocol_factory, host, port, family=family, flags=flags, sock=sock, backlog=backlog,
                ssl=ssl, reuse_address=reuse_address, reuse_port=reuse_port, ssl_handshake_timeout=timeout,
            )
        self._server_closed_fut = self._loop.create_future()

    def goaway(self, graceful: bool = True) -> None:
        """GOAWAY on every open connection; calls already open finish, then each connection closes.

        New streams are refused (REFUSED_STREAM, which clients retry elsewhere) once a
        connection's final GOAWAY is out. Connections accepted later are not affected: call
        :meth:`stop_listening` first when the server is going away.
        """
        for protocol in list(self.connections):
            protocol.goaway(graceful)

    def bound_port(self) -> int | None:
        """The port the listening socket got (useful after binding port 0)."""
        listening: Any = self._server
        sockets = listening.sockets if listening is not None else ()
        return int(sockets[0].getsockname()[1]) if sockets else None

    def stop_listening(self) -> None:
        """Accept no new connections; open ones and their calls carry on (unlike ``close()``).

        Connections the kernel has already completed but the loop has not accepted yet would
        be reset when the listening socket closes, and a proxy that has sent a call on one
        cannot tell that it was never served (nginx then fails it): they are accepted
        first, and served like the others. Connections made from now on (those, and TLS
        ones still in their handshake) are told GOAWAY as soon as they are made.
        """
        listening: Any = self._server
        if listening is None:
            return
        self.going_away = True
        for sock in listening.sockets:
            self._accept_pending(sock)
        listening.close()

    def _accept_pending(self, listening: Any) -> None:
        try:
            queue = socket.socket(fileno=os.dup(listening.fileno()))  # the same accept queue
        except OSError:
            return
        with queue:
            queue.setblocking(False)
            while True:
                try:
                    conn, _ = queue.accept()
                except OSError:  # BlockingIOError: the queue is empty
                    return
                conn.setblocking(False)
                task = self._loop.create_task(self._adopt(conn))
                self._adopting.add(task)
                task.add_done_callback(self._adopting.discard)

    async def _adopt(self, conn: socket.socket) -> None:
        """Serve a connection :meth:`stop_listening` accepted (told GOAWAY once made, as the server is going away)."""
        try:
            await self._loop.connect_accepted_socket(
                self._protocol_factory, conn, ssl=self._ssl,
                ssl_handshake_timeout=self._tls_handshake_timeout() if self._ssl is not None else None,
            )
        except Exception:  # the client went away, or its TLS handshake failed
            conn.close()

    async def wait_final_goaways(self, timeout: float) -> bool:
        """After :meth:`goaway`: until every connection has sent its final GOAWAY (or closed).

        From then on no new call can arrive, and (this yields to the loop once more) the
        handlers of the last ones have started. False if ``timeout`` passed first.
        """
        deadline = self._loop.time() + timeout
        while any(p.made and not p.closed and p.last_stream_id is None for p in self.connections):
            if self._loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        return True

    def replace_routes(self, prefix: str, routes: dict[str, Any]) -> None:
        """Serve ``routes`` instead of every method path starting with ``prefix`` (``/pkg.Service/``).

        grpclib's connections share the server's one path → handler dict and look a path up
        once per call, so changing it in place reaches every open connection at once, and a
        call already started keeps the handler it found.
        """
        mapping: dict[str, Any] = self._mapping
        for path in [p for p in mapping if p.startswith(prefix) and p not in routes]:
            del mapping[path]
        mapping.update(routes)

    def close_all(self) -> None:
        """GOAWAY and close every connection now; calls still running are cancelled."""
        for protocol in list(self.connections):
            protocol.close_now()

    async def wait_connections_closed(self, timeout: float | None = None) -> bool:
        """Wait until no connection is open (after :meth:`goaway`); False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._no_connections.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _tls_handshake_timeout(self) -> float:
        return self.limits.handshake_timeout or 60.0  # asyncio's own default

    def _refused(self, peer: str) -> None:
        self.refused_connections += 1
        self._refusal_log.warn("refused a connection from %s: %d connections are open, which is the limit "
                               "(--max-connections)", peer, self.limits.max_connections)

    def _forget_unmade(self, protocol: WireProtocol) -> None:
        if not protocol.made:
            self._forget(protocol)

    def _forget(self, protocol: WireProtocol) -> None:
        """A connection closed: release its handler now, not ten connections later as grpclib would."""
        self.connections.discard(protocol)
        if not self.connections:
            self._no_connections.set()
        handler = cast(_Handler, protocol.handler)
        if handler in self._handlers:
            task = self._loop.create_task(self._release(handler))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    async def _release(self, handler: _Handler) -> None:
        await handler.wait_closed()  # its cancelled calls have unwound
        self._handlers.discard(handler)
        handler.release()


# -- messages -------------------------------------------------------------------------------


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
    timeout = wire.server.limits.first_message_timeout if wire is not None and first else 0.0
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
    prefix = await h2_stream.buffer.read(5)  # not recv_data: a _GzipStream would inflate unbudgeted
    if not prefix:
        return None
    compressed, size = _PREFIX.unpack(prefix)
    if size > limit:
        raise ResourceExhausted(
            f"request message to {rpc} is {size} bytes, over the server's limit of {limit} bytes (--max-message-mb)"
        )
    if compressed and (wire is None or not wire.gzip_request):
        raise InvalidArgument(f"request message to {rpc} is flagged compressed, but the call declared no "
                              f"grpc-encoding")
    budget = wire.server.budget if wire is not None else None
    if budget is not None and not budget.reserve(size):
        raise ResourceExhausted(
            f"request message to {rpc} is {size} bytes; the server is already receiving {budget.used} bytes of "
            f"requests, and its limit is {budget.limit} bytes (--max-inflight-mb). Retry later"
        )
    try:
        body = await h2_stream.buffer.read(size)
        if compressed:
            body = _inflate(body, limit, rpc)
        return stream._codec.decode(body, stream._recv_type)
    finally:
        if budget is not None:
            budget.release(size)


def _inflate(data: bytes, limit: int, rpc: str) -> bytes:
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


def _gzip(body: bytes) -> bytes:
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
            body = _gzip(body)
        chunks.append(_PREFIX.pack(flag, len(body)))
        chunks.append(body)
    await h2_stream.send_data(b"".join(chunks))
    stream._send_message_done = True
    stream._messages_sent += len(messages)
    connection = h2_stream.connection
    connection.messages_sent += len(messages)
    connection.last_message_sent = time.monotonic()
