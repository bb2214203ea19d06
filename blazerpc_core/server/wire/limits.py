"""Limits and counters of the HTTP/2 layer: what one server process allows, holds and refused.

Each limit is listed in docs/security.md, "Connection limits".
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass

from blazerpc_core.errors import RegistrationError
from blazerpc_core.settings import ServeSettings

log = logging.getLogger("blazerpc.server")

MiB = 1024 * 1024
#: Seconds between two warnings about refused or throttled connections.
LOG_EVERY = 5.0


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


class Throttled:
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
