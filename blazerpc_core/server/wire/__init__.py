"""The HTTP/2 layer under grpclib: connections, their limits, and gRPC message framing.

Every use of grpclib and h2 internals on the server side lives in this package, so an
upgrade has one place to check. Written against grpclib 0.4.9 (pinned
``grpclib>=0.4.9,<0.5``) and h2 4.x: it mirrors ``grpclib.protocol.H2Protocol.connection_made``
and ``EventsProcessor``, ``grpclib.server.Server._protocol_factory`` and ``start``, and
``grpclib.server.Stream.recv_message`` / ``send_message`` and ``grpclib.server.request_handler``,
and subclasses ``h2.connection.H2Connection``.

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

Its modules: :mod:`.limits` (limits and counters), :mod:`.connection` (one HTTP/2
connection), :mod:`.h2` (h2's connection without two per-frame costs), :mod:`.requests`
(a call from its headers to its status), :mod:`.messages` (a call's messages: framing,
limits, gzip), :mod:`.writes` (when bytes leave) and :mod:`.server` (listening,
accepting, draining).
"""
