"""The server of the wire layer: it listens, accepts connections up to its cap, and drains them."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl as _ssl
from collections.abc import Collection
from typing import Any, cast

import grpclib.server
from grpclib.config import Configuration
from grpclib.protocol import H2Protocol

from blazerpc_core.server.wire.connection import RefusedProtocol, WireHandler, WireProtocol
from blazerpc_core.server.wire.header_blocks import quiet_hpack
from blazerpc_core.server.wire.limits import ByteBudget, Throttled, WireLimits, WireStats

log = logging.getLogger("blazerpc.server")


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
        self._refusal_log = Throttled()
        self._calm_log = Throttled()
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
            return RefusedProtocol(self)
        handler = WireHandler(self._mapping, self._codec, self._status_details_codec, self.__dispatch__)
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

    def calmed(self, peer: str, what: str) -> None:
        self.calmed_connections += 1
        self._calm_log.warn(
            "closed the connection from %s with GOAWAY ENHANCE_YOUR_CALM: %s faster than "
            "--max-resets-per-second %g allows", peer, what, self.limits.max_resets_per_second,
        )

    def refused(self, peer: str) -> None:
        self.refused_connections += 1
        self._refusal_log.warn("refused a connection from %s: %d connections are open, which is the limit "
                               "(--max-connections)", peer, self.limits.max_connections)

    def _forget_unmade(self, protocol: WireProtocol) -> None:
        if not protocol.made:
            self.forget(protocol)

    def forget(self, protocol: WireProtocol) -> None:
        """A connection closed: release its handler now, not ten connections later as grpclib would."""
        self.connections.discard(protocol)
        if not self.connections:
            self._no_connections.set()
        handler = cast(WireHandler, protocol.handler)
        if handler in self._handlers:
            task = self._loop.create_task(self._release(handler))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    async def _release(self, handler: WireHandler) -> None:
        await handler.wait_closed()  # its cancelled calls have unwound
        self._handlers.discard(handler)
        handler.release()
