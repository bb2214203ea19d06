"""A grpclib ``Channel`` that lets calls in flight finish across a graceful GOAWAY and a closing connection.

grpclib's client gives up on every stream of a connection as soon as it receives GOAWAY
(h2 even refuses any further frame), and again when the connection closes, even for a
stream whose reply is already buffered. A draining server (blazerpc's, grpc-go's, Envoy)
sends GOAWAY first and then finishes the calls it has; with plain grpclib those calls
were lost, reported UNAVAILABLE, and retried, running their model twice. Here:

* a GOAWAY without error cuts only the streams the server says it never took (ids above
  its last stream id), which are safe to retry; the others carry on, and new calls open a
  new connection;
* a closing connection spares streams whose reply and trailers have all arrived.

This reaches into grpclib and h2 internals (the events processor, the connection's
transport, h2's connection state machine), as the server does; grpclib is pinned below 0.5.
"""

from __future__ import annotations

from asyncio import BaseTransport
from typing import Any

from grpclib.client import Channel, Handler
from grpclib.protocol import EventsProcessor, H2Protocol
from h2.connection import ConnectionInputs, ConnectionState
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated


class _Processor(EventsProcessor):
    def process_connection_terminated(self, event: ConnectionTerminated) -> None:
        if event.error_code != ErrorCodes.NO_ERROR or event.last_stream_id is None:
            super().process_connection_terminated(event)
            return
        self.handler.close()  # the channel opens a new connection for the next call
        last = event.last_stream_id
        for stream_id, stream in list(self.streams.items()):
            if stream_id > last and stream.trailers is None:
                stream.__terminated__(f"the server went away before taking this call (GOAWAY, last stream {last})")

    def close(self, reason: str = "Connection closed") -> None:
        streams = self.streams
        complete = any(s.trailers is not None for s in streams.values())
        connection: Any = self.connection
        transport = getattr(connection, "_transport", None)
        if complete:
            self.streams = {i: s for i, s in streams.items() if s.trailers is None}
        try:
            super().close(reason)
        finally:
            # release_stream() pops from the original dict; reading a spared buffer may still
            # flush a window update, which a closed transport drops.
            self.streams = streams
            if complete and transport is not None:
                connection._transport = transport


class _Protocol(H2Protocol):
    def connection_made(self, transport: BaseTransport) -> None:
        super().connection_made(transport)
        machine: Any = self.connection._connection.state_machine
        # h2 closes the whole connection on GOAWAY; HTTP/2 lets streams the server took finish.
        machine._transitions = {
            **machine._transitions,
            (ConnectionState.CLIENT_OPEN, ConnectionInputs.RECV_GOAWAY): (None, ConnectionState.CLIENT_OPEN),
        }
        self.processor = _Processor(self.handler, self.connection)


class SparingChannel(Channel):
    """``grpclib.client.Channel`` whose calls in flight survive a graceful GOAWAY and a closing connection."""

    def _protocol_factory(self) -> H2Protocol:
        channel: Any = self
        return _Protocol(Handler(), channel._config, channel._h2_config)
