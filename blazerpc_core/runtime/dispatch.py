"""When a batch goes to the model: the resolved knobs, the rule contract, and size-or-timeout.

A :class:`DispatchRule` is the part of a batching policy that decides *when*; the
:class:`~blazerpc_core.runtime.batcher.Batcher` does the rest (queue, concurrency,
deadlines, joining and splitting). Third-party policies can reuse the batcher with a rule
of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from blazerpc_core.errors import RegistrationError
from blazerpc_core.runtime.queue import RequestQueue
from blazerpc_core.settings import BatchSettings


@dataclass(frozen=True)
class BatchConfig:
    """Batching knobs with every default filled in; times in seconds.

    Defaults: 32 rows per batch, 5 ms timeout, a queue of 1024 rows, one batch at a time,
    a 100 ms latency target (adaptive policy) and one priority level gained per 100 ms
    of waiting.
    """

    max_batch_size: int = 32
    batch_timeout: float = 0.005
    max_queue_size: int = 1024
    max_concurrent_batches: int = 1
    max_latency: float = 0.1
    priority_aging: float = 0.1

    @classmethod
    def from_settings(cls, settings: BatchSettings, label: str) -> BatchConfig:
        """Fill unset knobs with defaults; refuse nonsense values, naming the model."""
        default = cls()

        def pick(value: float | None, fallback: float, name: str, *, minimum: float) -> float:
            if value is None:
                return fallback
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
                raise RegistrationError(f"model {label}: {name} must be a number >= {minimum}, not {value!r}")
            return value

        return cls(
            max_batch_size=int(pick(settings.max_batch_size, default.max_batch_size, "max_batch_size", minimum=1)),
            batch_timeout=pick(settings.batch_timeout_ms, default.batch_timeout * 1000, "batch_timeout_ms",
                               minimum=0) / 1000,
            max_queue_size=int(pick(settings.max_queue_size, default.max_queue_size, "max_queue_size", minimum=1)),
            max_concurrent_batches=int(
                pick(settings.max_concurrent_batches, default.max_concurrent_batches, "max_concurrent_batches",
                     minimum=1)
            ),
            max_latency=pick(settings.max_latency_ms, default.max_latency * 1000, "max_latency_ms",
                             minimum=1) / 1000,
        )


class BatchState(Protocol):
    """What a rule may read of the batcher it serves."""

    label: str
    config: BatchConfig
    queue: RequestQueue
    #: Batches running now.
    running: int
    #: (start time, rows) of every running batch.
    inflight: list[tuple[float, int]]


class DispatchRule(Protocol):
    """Decides when the queued requests of one model go to it as a batch.

    Times are ``time.monotonic()`` seconds. Every method runs on the event loop and must
    be cheap: ``admit`` runs once per request.

    A rule whose ``delay`` is 0 whenever no batch is running may say so with a class
    attribute ``waits_when_idle = False``. A request that finds such a model idle would go
    out as a batch of one at once anyway, so when the model runs inline the batcher calls
    it directly, without the queue (see ``Batcher._alone_pays``). Rules without the
    attribute are taken to wait.
    """

    def admit(self, state: BatchState, rows: int, now: float, remaining: float | None) -> None:
        """Called before a request of ``rows`` rows is queued; raise a BlazeError to refuse it.

        ``remaining`` is the time left before the client's deadline (None: no deadline).
        """

    def delay(self, state: BatchState, now: float) -> float:
        """Seconds to wait before dispatching what is queued (0 or less: dispatch now).

        Called whenever a batch could start: the queue is not empty and a slot is free.
        The batcher asks again when the wait is over, when ``max_batch_size`` rows are
        queued, or when a running batch finishes.
        """
        ...

    def observe(self, rows: int, seconds: float) -> None:
        """A batch of ``rows`` rows took ``seconds`` in the model function."""


class SizeOrTimeout:
    """Dispatch at ``max_batch_size`` rows, or when the oldest request waited ``batch_timeout``.

    An idle model (no batch running) takes whatever is queued at once: waiting for rows
    while the model sits idle only adds latency, and under load rows collect anyway while
    the previous batch runs. So the timeout bounds waiting for a free slot to fill only
    when other batches are running (``max_concurrent_batches`` > 1).
    """

    name = "size-or-timeout"
    waits_when_idle = False

    def admit(self, state: BatchState, rows: int, now: float, remaining: float | None) -> None:
        return None

    def delay(self, state: BatchState, now: float) -> float:
        queue = state.queue
        if state.running == 0 or queue.rows >= state.config.max_batch_size:
            return 0.0
        oldest = queue.oldest()
        if oldest is None:
            return 0.0
        return oldest + state.config.batch_timeout - now

    def observe(self, rows: int, seconds: float) -> None:
        return None
