"""One HTTP/2 connection of the server: its protocol, its events, its writes.

Mirrors grpclib 0.4.9's ``H2Protocol.connection_made`` and ``EventsProcessor``, with the
limits of :class:`~blazerpc_core.server.wire.limits.WireLimits` applied to every stream and
frame, writes coalesced per turn of the event loop, and the two-step GOAWAY of a graceful
shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

import grpclib.server
from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.metadata import Deadline, decode_timeout, encode_grpc_message
from grpclib.protocol import Connection, EventsProcessor, H2Protocol, _set_nodelay
from grpclib.protocol import Stream as H2Stream
from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.events import PingAckReceived, RemoteSettingsChanged, RequestReceived, StreamReset
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import Frame, GoAwayFrame, SettingsFrame

from blazerpc_core.server.wire.h2 import WireH2Connection
from blazerpc_core.server.wire.header_blocks import WireDecoder, WireEncoder
from blazerpc_core.server.wire.limits import ByteBudget, WireLimits
from blazerpc_core.server.wire.messages import GzipStream, WireStream
from blazerpc_core.server.wire.requests import serve_request
from blazerpc_core.server.wire.writes import CoalescingTransport

log = logging.getLogger("blazerpc.server")

#: The HTTP/2 default window, which every connection starts with (RFC 9113 section 6.9.2).
_DEFAULT_WINDOW = 65535
_MAX_STREAM_ID = 2**31 - 1
#: Opaque data of the PING that separates the two GOAWAY frames of a graceful shutdown.
_GOAWAY_PING = b"blzgoawy"
#: A client reset after this share of the call's own ``grpc-timeout`` is the client giving up
#: on its deadline, not a rapid reset: a stream that lived that long is no cheaper than one
#: the server answers DEADLINE_EXCEEDED itself (the client's clock starts a little earlier).
_GIVING_UP_SHARE = 0.9


class WireOwner(Protocol):
    """What a connection needs of the server that accepted it (:class:`~.server.WireServer`)."""

    limits: WireLimits
    budget: ByteBudget
    #: The server stopped listening: a connection made now is told GOAWAY at once.
    going_away: bool

    def forget(self, protocol: WireProtocol) -> None:
        """The connection closed: release what it held."""

    def refused(self, peer: str) -> None:
        """A connection over ``max_connections`` was turned away."""

    def calmed(self, peer: str, what: str) -> None:
        """A connection was closed with ENHANCE_YOUR_CALM for ``what`` (resets or refusals too fast)."""


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


class WireHandler(grpclib.server.Handler):
    """grpclib's per-connection handler, serving each stream with :func:`~.requests.serve_request`
    and releasable as soon as its connection closes."""

    def accept(self, stream: H2Stream, headers: Any, release_stream: Callable[[], Any]) -> None:
        # No grpclib ``__gc_step__``: it rebuilt the task map every ten streams, O(streams in
        # flight); here each task leaves the map as its stream is released (``finished``).
        self._tasks[stream] = self.loop.create_task(
            serve_request(self, cast(WireStream, stream), headers, release_stream)
        )

    def finished(self, stream: H2Stream) -> None:
        """``stream`` was released: its task is ending."""
        self._tasks.pop(stream, None)

    def cancel(self, stream: H2Stream) -> None:
        task = self._tasks.pop(stream, None)
        if task is not None:
            task.cancel()
            self._cancelled.add(task)
            task.add_done_callback(self._cancelled.discard)  # even if it never started

    def release(self) -> None:
        """Drop every task (and through them every stream and buffer) of a closed connection."""
        self._tasks.clear()
        self._cancelled.clear()


class WireProcessor(EventsProcessor):
    """grpclib's h2 event processor, refusing single streams where grpclib would lose the connection."""

    def __init__(self, handler: WireHandler, connection: WireConnection, protocol: WireProtocol) -> None:
        super().__init__(handler, connection)
        self.protocol = protocol
        self.h2 = connection._connection

    def register(self, stream: H2Stream) -> Callable[[], None]:
        release = super().register(stream)
        protocol, handler = self.protocol, cast(WireHandler, self.handler)
        protocol.idle_since = None

        def release_stream() -> None:
            release()
            handler.finished(stream)
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
        size, encoding, accept, timeout = 0, None, "", None
        for name, value in headers:
            size += len(name) + len(value) + 32  # as SETTINGS_MAX_HEADER_LIST_SIZE counts (RFC 9113 6.5.2)
            if name == "grpc-encoding":
                encoding = value
            elif name == "grpc-accept-encoding":
                accept = value
            elif name == "grpc-timeout":
                timeout = value
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
        stream = (GzipStream if gzip_request else WireStream)(
            self.connection, self.h2, protocol.writes, stream_id=stream_id,
            limits=protocol.limits, budget=protocol.server.budget, gzip_request=gzip_request, compress=compress,
            served=self.streams,
        )
        if timeout is not None:
            with contextlib.suppress(ValueError):  # a malformed timeout is the call handler's to answer
                seconds, now = decode_timeout(timeout), time.monotonic()
                stream.deadline = Deadline(_timestamp=now + seconds)
                stream.gives_up_at = now + _GIVING_UP_SHARE * seconds
        self.handler.accept(stream, headers, self.register(stream))

    def process_stream_reset(self, event: StreamReset) -> None:
        stream = self.streams.get(event.stream_id) if event.remote_reset else None
        super().process_stream_reset(event)
        if stream is None:
            return
        gives_up_at = getattr(stream, "gives_up_at", None)
        if gives_up_at is None or time.monotonic() < gives_up_at:
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

    def __init__(self, handler: WireHandler, config: Configuration, h2_config: H2Configuration, *,
                 server: WireOwner) -> None:
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
        h2 = WireH2Connection(config=self.h2_config)
        h2.encoder, h2.decoder = WireEncoder(), WireDecoder()
        # The first SETTINGS frame advertises the limits the processor enforces per stream...
        h2.local_settings = wire_settings(limits, limits.max_concurrent_streams)
        h2.initiate_connection()
        # ...while h2 itself only fails the connection past the hard caps. Its HPACK decoder
        # must finish every header block up to there, or the connection's state would diverge.
        h2.local_settings = wire_settings(limits, limits.stream_hard_cap)
        h2.decoder.max_header_list_size = limits.header_list_hard_cap
        if limits.connection_window > _DEFAULT_WINDOW:
            h2.increment_flow_control_window(limits.connection_window - _DEFAULT_WINDOW)
        self.writes = CoalescingTransport(cast(asyncio.Transport, transport), asyncio.get_running_loop())
        self.connection = WireConnection(h2, cast(asyncio.Transport, self.writes), config=self.config)
        self.connection.flush()
        self.connection.initialize()
        self.processor = WireProcessor(cast(WireHandler, self.handler), self.connection, self)
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
        self.server.forget(self)

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
        self.server.calmed(self._peer, what)
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


class RefusedProtocol(H2Protocol):
    """A connection over ``max_connections``: told GOAWAY and closed as soon as it is made.

    An H2Protocol only in type (grpclib's factory must return one); it keeps no state.
    """

    def __init__(self, server: WireOwner) -> None:  # no super().__init__(): nothing of grpclib's is used
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        goaway = GoAwayFrame(0, last_stream_id=0, error_code=ErrorCodes.NO_ERROR,
                             additional_data=b"connection limit reached")
        cast(asyncio.Transport, transport).write(SettingsFrame(0).serialize() + goaway.serialize())
        transport.close()
        peer = transport.get_extra_info("peername")
        self.server.refused(f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unknown peer")

    def data_received(self, data: bytes) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        pass


def wire_settings(limits: WireLimits, max_streams: int) -> Settings:
    return Settings(client=False, initial_values={
        SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
        SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_bytes,
        SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window,
    })
