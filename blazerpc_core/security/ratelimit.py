"""Per-client rate limiting with token buckets (``--rate-limit RPS``, ``--rate-burst N``).

Off unless ``--rate-limit`` is set. Each client gets a bucket of ``burst`` tokens that
refills at ``rate`` tokens a second; a call takes one token or is answered
RESOURCE_EXHAUSTED with a ``retry-after-ms`` trailer saying when the next token is due.

The client key is the credential name when auth is on (so keys cannot be invented to
dodge the limit), else the API key the client presents, else the peer's host. Without
auth a client can claim any API key; put auth in front when that matters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from blazerpc_core.errors import RegistrationError, ResourceExhausted
from blazerpc_core.markers import hookimpl
from blazerpc_core.security.auth import presented_token

if TYPE_CHECKING:
    from blazerpc_core.call import CallContext, CallNext, Middleware
    from blazerpc_core.settings import ServeSettings

RATE_OPTION = "rate_limit"
BURST_OPTION = "rate_burst"
RETRY_HEADER = "retry-after-ms"
MAX_CLIENTS = 100_000


class TokenBuckets:
    """One token bucket per key, in a table bounded to ``max_clients`` entries.

    When the table is full, buckets that have refilled completely are dropped (a new
    bucket starts full, so forgetting them changes nothing); if that is not enough the
    table is cleared, which errs towards letting calls through.
    """

    def __init__(
        self, rate: float, burst: int, *, max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0:
            raise RegistrationError(f"rate limit must be positive, got {rate!r}")
        if burst < 1:
            raise RegistrationError(f"rate burst must be at least 1, got {burst!r}")
        self.rate = float(rate)
        self.burst = int(burst)
        self._max = max_clients
        self._clock = clock
        # key -> [tokens, last refill time]; lists, because they are updated in place.
        self._buckets: dict[str, list[float]] = {}

    def __len__(self) -> int:
        """How many clients have a bucket now."""
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Take a token: 0.0 when granted, else the seconds until one is available."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._prune(now)
            self._buckets[key] = [self.burst - 1.0, now]
            return 0.0
        tokens = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        full_after = self.burst / self.rate
        for key in [k for k, (_, last) in self._buckets.items() if now - last >= full_after]:
            del self._buckets[key]
        if len(self._buckets) >= self._max:
            self._buckets.clear()


def client_key(ctx: CallContext) -> str:
    """Who a call counts against: credential name, else presented API key, else peer host."""
    principal = ctx.principal
    if principal is not None:
        return f"principal:{principal}"
    token = presented_token(ctx.metadata)
    if token is not None:
        return f"key:{token}"
    peer = ctx.peer
    return "peer:" + (peer.rpartition(":")[0] if peer else "unknown")


class RateLimitMiddleware:
    """Answers RESOURCE_EXHAUSTED, with a retry hint, once a client's bucket is empty."""

    def __init__(self, buckets: TokenBuckets) -> None:
        self.buckets = buckets

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        wait = self.buckets.take(client_key(ctx))
        if wait:
            retry_ms = max(1, math.ceil(wait * 1000.0))
            ctx.trailing_metadata[RETRY_HEADER] = str(retry_ms)
            raise ResourceExhausted(
                f"rate limit of {self.buckets.rate:g} calls/s (burst {self.buckets.burst}) exceeded "
                f"for this client; retry in {retry_ms} ms"
            )
        return await call_next(ctx)


@hookimpl
def blazerpc_cli_options() -> Sequence[click.Option]:
    return [
        click.Option(
            ["--rate-limit", RATE_OPTION], envvar="BLAZERPC_RATE_LIMIT", show_envvar=True, default=None,
            type=click.FloatRange(min=0, min_open=True),
            help="Calls per second each client may make (token bucket); off when unset.",
        ),
        click.Option(
            ["--rate-burst", BURST_OPTION], envvar="BLAZERPC_RATE_BURST", show_envvar=True, default=None,
            type=click.IntRange(min=1),
            help="Calls a client may make at once before --rate-limit applies "
                 "[default: the rate, rounded up].",
        ),
    ]


@hookimpl
def blazerpc_middleware(settings: ServeSettings) -> Sequence[Middleware] | None:
    rate = settings.extra.get(RATE_OPTION)
    if rate is None:
        if settings.extra.get(BURST_OPTION) is not None:
            raise RegistrationError("--rate-burst needs --rate-limit")
        return None
    burst = settings.extra.get(BURST_OPTION) or max(1, math.ceil(rate))
    return [RateLimitMiddleware(TokenBuckets(float(rate), int(burst)))]
