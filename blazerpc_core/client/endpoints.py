"""Server addresses: one reused grpclib channel each, their health, and which one takes the next call.

An address that fails (connection refused or lost, UNAVAILABLE) is set aside for a short,
growing, jittered time; one whose health service reports anything but SERVING is skipped
until it reports SERVING again. With several addresses a background task per address
keeps a ``grpc.health.v1.Health/Watch`` stream open on its channel, so a server that
starts draining (it reports NOT_SERVING first) stops getting calls at once, and one that
comes back is used again as soon as it says so. When no address looks good the one
expected to recover first is tried anyway: a client never refuses to try.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import h2.exceptions
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.const import Cardinality, Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.metadata import Deadline

from blazerpc_core.client.channel import SparingChannel
from blazerpc_core.client.protocols import HEALTH_SERVICE, SERVING, protocols

log = logging.getLogger("blazerpc.client")

DEFAULT_PORT = 50051
#: Exceptions that mean the connection, not the call, failed: the call can go elsewhere.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    OSError, StreamTerminatedError, h2.exceptions.ProtocolError, EOFError,
)


def parse_address(address: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a bare host (port 50051)."""
    text = address.strip()
    if not text:
        raise ValueError("empty server address")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or str(DEFAULT_PORT)
    elif text.count(":") > 1:
        ipaddress.IPv6Address(text)  # a bare IPv6 address; raises ValueError otherwise
        host, port = text, str(DEFAULT_PORT)
    else:
        host, _, port = text.partition(":")
        port = port or str(DEFAULT_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad server address {address!r}: expected host:port")
    return host, int(port)


def tls_context(
    *, ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """A client TLS context: the system's trust store or ``ca_file``; a client certificate for mTLS."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file or key_file:
        if not cert_file:
            raise ValueError("a client key needs its certificate (cert_file)")
        context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["h2"])
    return context


class MessageTooLarge(Exception):
    """A message over the client's ``max_send_mb`` / ``max_receive_mb``; never retried."""


class LimitedCodec(CodecBase):
    """grpclib's protobuf codec plus size limits, which grpclib's client does not have."""

    __content_subtype__ = "proto"

    def __init__(self, max_send: int | None, max_receive: int | None) -> None:
        self.max_send = max_send
        self.max_receive = max_receive

    def encode(self, message: Any, message_type: Any) -> bytes:
        data: bytes = message.SerializeToString()
        if self.max_send is not None and len(data) > self.max_send:
            raise MessageTooLarge(f"request message of {len(data)} bytes is over the client's limit of "
                                  f"{self.max_send} bytes (max_send_mb; match the server's --max-message-mb)")
        return data

    def decode(self, data: bytes, message_type: Any) -> Any:
        # grpclib has read the whole message by now: the limit bounds what is parsed and kept.
        if self.max_receive is not None and len(data) > self.max_receive:
            raise MessageTooLarge(f"response message of {len(data)} bytes is over the client's limit of "
                                  f"{self.max_receive} bytes (max_receive_mb)")
        return message_type.FromString(data)


def jittered(seconds: float) -> float:
    """``seconds`` ±20%, so many clients backing off together do not come back together."""
    return seconds * random.uniform(0.8, 1.2)


class Endpoint:
    """One server address: its channel (created on first use, on the running loop) and its state."""

    #: Set aside after the n-th failure in a row for about BASE * 2**(n-1) seconds, at most CAP.
    DOWN_BASE = 0.1
    DOWN_CAP = 5.0

    def __init__(self, address: str, *, ssl_context: ssl.SSLContext | None, server_name: str | None,
                 codec: CodecBase) -> None:
        self.address = address
        self.host, self.port = parse_address(address)
        self._ssl = ssl_context
        self._config = Configuration(ssl_target_name_override=server_name)
        self._codec = codec
        self._channel: Channel | None = None
        self.inflight = 0
        #: What the health service last said: True (SERVING), False (anything else, or unreachable), None (unknown).
        self.serving: bool | None = None
        self.down_until = 0.0
        #: The server asked for no calls before this time (``retry-after-ms``).
        self.busy_until = 0.0
        self.failures = 0
        self.reported = asyncio.Event()

    @property
    def channel(self) -> Channel:
        if self._channel is None:
            self._channel = SparingChannel(self.host, self.port, ssl=self._ssl, config=self._config,
                                           codec=self._codec)
        return self._channel

    def eligible(self, now: float) -> bool:
        return self.serving is not False and now >= self.down_until and now >= self.busy_until

    def available_at(self) -> float:
        return max(self.down_until, self.busy_until)

    def failed(self) -> None:
        """The connection failed or the server said UNAVAILABLE: set the address aside for a while."""
        self.failures += 1
        delay = min(self.DOWN_CAP, self.DOWN_BASE * 2 ** min(self.failures - 1, 16))
        self.down_until = time.monotonic() + jittered(delay)

    def succeeded(self) -> None:
        if self.failures:
            self.failures = 0
            self.down_until = 0.0

    def hold(self, seconds: float) -> None:
        """Honour a server's ``retry-after-ms``: no calls to it before then."""
        self.busy_until = max(self.busy_until, time.monotonic() + seconds)

    def set_serving(self, serving: bool | None) -> None:
        if serving and self.serving is not True:
            self.failures, self.down_until = 0, 0.0
        if serving is not self.serving:
            log.debug("%s is %s", self.address, {True: "serving", False: "not serving", None: "unknown"}[serving])
        self.serving = serving
        self.reported.set()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __repr__(self) -> str:
        return f"Endpoint({self.address!r}, serving={self.serving}, inflight={self.inflight})"


class Balancer:
    """Picks the address for each call: least in-flight calls (ties in turn) or plain round robin."""

    POLICIES = ("least_loaded", "round_robin")

    def __init__(self, endpoints: Sequence[Endpoint], policy: str = "least_loaded") -> None:
        if policy not in self.POLICIES:
            raise ValueError(f"balance must be one of {', '.join(self.POLICIES)}, not {policy!r}")
        if not endpoints:
            raise ValueError("no server addresses given")
        self.endpoints = list(endpoints)
        self.policy = policy
        self._turn = 0

    def pick(self, avoid: Sequence[Endpoint] = ()) -> Endpoint:
        """An eligible address, preferring ones not in ``avoid`` (those that just failed this call)."""
        endpoints = self.endpoints
        if len(endpoints) == 1:
            return endpoints[0]
        now = time.monotonic()
        good = [e for e in endpoints if e.eligible(now)]
        candidates = [e for e in good if e not in avoid] or good
        if not candidates:
            # Nothing looks good: try the address that should come back first.
            return min(endpoints, key=lambda e: (e.serving is False, e in avoid, e.available_at()))
        self._turn += 1
        count = len(candidates)
        if self.policy == "round_robin" or count == 1:
            return candidates[self._turn % count]
        best = candidates[self._turn % count]
        for i in range(1, count):
            endpoint = candidates[(self._turn + i) % count]
            if endpoint.inflight < best.inflight:
                best = endpoint
        return best


# --- health -------------------------------------------------------------------------------


async def check_health(
    channel: Channel, service: str, *, metadata: Sequence[tuple[str, str]], timeout: float
) -> int:
    """``grpc.health.v1.Health/Check``: the serving status number (raises GRPCError, e.g. NOT_FOUND)."""
    p = protocols()
    async with channel.request(f"/{HEALTH_SERVICE}/Check", Cardinality.UNARY_UNARY, p.health_request,
                               p.health_response, timeout=timeout, metadata=metadata) as stream:
        await stream.send_message(p.health_request(service=service), end=True)
        reply = await stream.recv_message()
    assert reply is not None
    return int(reply.status)


async def watch_health(
    channel: Channel, service: str, *, metadata: Sequence[tuple[str, str]], deadline: Deadline | None = None
) -> AsyncIterator[int]:
    """``grpc.health.v1.Health/Watch``: each serving status the server sends, until the stream ends."""
    p = protocols()
    async with channel.request(f"/{HEALTH_SERVICE}/Watch", Cardinality.UNARY_STREAM, p.health_request,
                               p.health_response, deadline=deadline, metadata=metadata) as stream:
        await stream.send_message(p.health_request(service=service), end=True)
        async for reply in stream:
            yield int(reply.status)


class HealthMonitor:
    """Keeps each address's ``serving`` flag current through a Watch stream of service ``""``."""

    BACKOFF = 0.1
    BACKOFF_CAP = 5.0
    #: Seconds :meth:`stop` waits for the watches to end before leaving them to the loop.
    STOP_WAIT = 1.0

    def __init__(self, endpoints: Sequence[Endpoint], metadata: Sequence[tuple[str, str]]) -> None:
        self._endpoints = list(endpoints)
        self._metadata = metadata
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        for endpoint in self._endpoints:
            self._tasks.append(asyncio.ensure_future(self._watch(endpoint)))

    async def first_reports(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until every address has reported once, so the first call skips bad ones."""
        waits = [asyncio.ensure_future(e.reported.wait()) for e in self._endpoints]
        try:
            await asyncio.wait(waits, timeout=timeout)
        finally:
            for wait in waits:
                wait.cancel()

    async def _watch(self, endpoint: Endpoint) -> None:
        backoff = self.BACKOFF
        while not self._stopping:
            try:
                async for status in watch_health(endpoint.channel, "", metadata=self._metadata):
                    endpoint.set_serving(status == SERVING)
                    backoff = self.BACKOFF
                endpoint.set_serving(False)  # the server ended the stream: it is going away
            except GRPCError as exc:
                if exc.status is not Status.UNAVAILABLE:
                    # No health service here, or it wants credentials we lack: calls alone decide.
                    log.debug("health of %s cannot be watched: %s", endpoint.address, exc)
                    endpoint.set_serving(None)
                    return
                endpoint.set_serving(False)
            except TRANSPORT_ERRORS:
                endpoint.set_serving(False)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not kill the monitor silently, nor the client
                log.exception("health watch of %s failed", endpoint.address)
                endpoint.set_serving(None)
            if self._stopping:
                return
            await asyncio.sleep(jittered(backoff))
            backoff = min(self.BACKOFF_CAP, backoff * 2)

    async def stop(self) -> None:
        """End the watches; bounded even if a watch swallows its cancellation.

        grpclib's stream wrapper re-raises a connection loss in place of the cancellation
        when both arrive together: the watch then saw a transport error and would retry
        forever, and ``Client.close()`` hung waiting for it (seen once in CI, a client
        closed just as its server finished stopping). The flag ends the loop either way.
        """
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.STOP_WAIT)
        self._tasks.clear()
