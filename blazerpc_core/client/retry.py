"""When a failed call is tried again, how long to wait first, and how many retries the client may afford.

Only UNAVAILABLE (the server is starting, draining or unreachable) and RESOURCE_EXHAUSTED
(its queue is full or it rate-limits us) are retried: they say the request was not
processed. Everything else (INVALID_ARGUMENT, INTERNAL — the model raised —,
DEADLINE_EXCEEDED…) is final, so a model runs at most once per call unless a connection
died under it before any reply.

Waits grow exponentially with ±20% jitter, and are never shorter than the server's
``retry-after-ms``. A :class:`RetryBudget` caps retries to a fraction of calls, so a
struggling fleet sees at most that much extra load from this client, not a multiple.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from grpclib.const import Status

from blazerpc_core.client.endpoints import jittered

RETRYABLE = frozenset({Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED})


def retryable(status: Status, message: str) -> bool:
    """Whether a server's answer invites a retry.

    RESOURCE_EXHAUSTED also answers a request over the server's ``--max-message-mb``,
    which would be refused again: that one (its message names the option) is final.
    """
    if status is Status.RESOURCE_EXHAUSTED:
        return "max-message" not in message
    return status in RETRYABLE


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries; ``RetryPolicy(max_attempts=1)`` turns retries off.

    ``budget_ratio`` is the share of calls that retries may add (0.2: at most one retry
    per five calls, over time); ``budget_floor`` retries are allowed regardless, refilled
    at ``budget_floor / budget_window`` per second, so a client making few calls can still
    ride out a restart.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    multiplier: float = 2.0
    budget_ratio: float = 0.2
    budget_floor: float = 10.0
    budget_window: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff or self.multiplier < 1:
            raise ValueError("need 0 <= initial_backoff <= max_backoff and multiplier >= 1")
        if self.budget_ratio < 0 or self.budget_floor < 0 or self.budget_window <= 0:
            raise ValueError("the retry budget's ratio and floor must be >= 0, its window > 0")

    def backoff(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based); at least the server's ``retry_after``."""
        wait = jittered(min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1)))
        if retry_after is not None:
            # Come back when told, spread over the next tenth so waiting clients do not all return at once.
            wait = max(wait, retry_after * random.uniform(1.0, 1.1))
        return wait


class RetryBudget:
    """A token bucket: each call adds ``ratio`` tokens, time adds the floor, each retry takes one.

    Holds at most ``max(floor, 1)`` tokens, so a long quiet spell does not bank a burst of
    retries for the next outage. Not thread-safe: one per client, used on its event loop.
    """

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.ratio = policy.budget_ratio
        self.capacity = max(policy.budget_floor, 1.0)
        self.refill = policy.budget_floor / policy.budget_window
        self._clock = clock
        self.tokens = self.capacity
        self._last = clock()

    def _top_up(self, amount: float = 0.0) -> None:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + amount + (now - self._last) * self.refill)
        self._last = now

    def call_started(self) -> None:
        self._top_up(self.ratio)

    def try_retry(self) -> bool:
        """Take a token for one retry; False when the budget is spent."""
        self._top_up()
        if self.tokens >= 1.0 - 1e-9:  # five calls at 0.2 earn a whole token, rounding aside
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        return False
