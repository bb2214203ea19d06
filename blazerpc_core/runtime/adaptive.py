"""The adaptive dispatch rule: spend the latency target on bigger batches, refuse what cannot meet it.

It learns what a batch costs (``fixed + per_row * rows``, a least-squares fit over the
most recent batches) and how fast rows arrive. A batch waits for more rows only while
the oldest queued request could still finish a full batch within ``max_latency_ms``,
and only if more rows are actually expected in that time; so a lone request at low load
goes at once. Once the cost is known, a request that would queue behind more work than
the target allows is refused at once with RESOURCE_EXHAUSTED (or DEADLINE_EXCEEDED when
its own deadline is shorter), instead of timing out later. A request that finds the
model idle is always admitted: it gets the best service there is, and it keeps the fit
fresh after the model speeds up.
"""

from __future__ import annotations

import math
from collections import deque

from blazerpc_core.errors import DeadlineExceeded, ResourceExhausted
from blazerpc_core.runtime.dispatch import BatchState


class CostModel:
    """Seconds a batch of ``rows`` rows takes, fitted over the last ``window`` batches."""

    def __init__(self, *, window: int = 64, min_samples: int = 3) -> None:
        self._samples: deque[tuple[int, float]] = deque(maxlen=window)
        self.min_samples = min_samples
        self.fixed = 0.0
        self.per_row = 0.0

    @property
    def ready(self) -> bool:
        return len(self._samples) >= self.min_samples

    def add(self, rows: int, seconds: float) -> None:
        self._samples.append((rows, seconds))
        self._fit()

    def predict(self, rows: int) -> float:
        return self.fixed + self.per_row * rows

    def _fit(self) -> None:
        n = len(self._samples)
        sx = sum(r for r, _ in self._samples)
        sy = sum(t for _, t in self._samples)
        mean_x, mean_y = sx / n, sy / n
        var = sum((r - mean_x) ** 2 for r, _ in self._samples) / n
        if var < 1e-9:
            # One batch size seen so far: all we know is what that size costs. Assuming
            # the cost is fixed errs towards admitting requests rather than refusing them.
            self.fixed, self.per_row = mean_y, 0.0
            return
        cov = sum((r - mean_x) * (t - mean_y) for r, t in self._samples) / n
        per_row = cov / var
        fixed = mean_y - per_row * mean_x
        if per_row < 0:
            fixed, per_row = mean_y, 0.0
        elif fixed < 0:
            fixed, per_row = 0.0, sy / sx
        self.fixed, self.per_row = fixed, per_row


class ArrivalRate:
    """Rows per second arriving, smoothed; it decays after a pause so old bursts are forgotten."""

    def __init__(self, *, window: float = 0.1, memory: float = 0.5) -> None:
        self.window = window
        self.memory = memory
        self.rate = 0.0
        self._start: float | None = None
        self._rows = 0

    def add(self, rows: int, now: float) -> None:
        if self._start is None:
            self._start = now
        self._rows += rows
        self._roll(now)

    def get(self, now: float) -> float:
        self._roll(now)
        return self.rate

    def _roll(self, now: float) -> None:
        if self._start is None:
            return
        elapsed = now - self._start
        if elapsed < self.window:
            return
        keep = math.exp(-elapsed / self.memory)
        self.rate = keep * self.rate + (1 - keep) * (self._rows / elapsed)
        self._start, self._rows = now, 0


class Adaptive:
    """Latency-target batching; see the module docstring."""

    name = "adaptive"

    def __init__(self, *, cost: CostModel | None = None, rate: ArrivalRate | None = None) -> None:
        self.cost = cost or CostModel()
        self.rate = rate or ArrivalRate()

    def admit(self, state: BatchState, rows: int, now: float, remaining: float | None) -> None:
        self.rate.add(rows, now)
        if not self.cost.ready or (state.running == 0 and state.queue.count == 0):
            return
        estimate = self.estimate(state, rows, now)
        target = state.config.max_latency
        if estimate > target:
            raise ResourceExhausted(
                f"model {state.label} cannot answer within its latency target of {target * 1000:.0f} ms: "
                f"about {estimate * 1000:.0f} ms of work is ahead of this request ({state.queue.rows} rows "
                f"queued, {state.running} batch(es) running); retry later"
            )
        if remaining is not None and estimate > remaining:
            raise DeadlineExceeded(
                f"model {state.label} cannot answer before the client's deadline: {remaining * 1000:.0f} ms "
                f"left, about {estimate * 1000:.0f} ms needed"
            )

    def estimate(self, state: BatchState, rows: int, now: float) -> float:
        """Seconds until a request of ``rows`` rows queued now would be answered."""
        config = state.config
        full = config.max_batch_size
        slots = config.max_concurrent_batches
        free = sorted(max(now, start + self.cost.predict(r)) for start, r in state.inflight)
        free += [now] * max(0, slots - len(free))
        ahead = state.queue.rows + rows
        batches = max(1, math.ceil(ahead / full))
        waves, slot = divmod(batches - 1, slots)
        last = ahead - (batches - 1) * full
        start = free[min(slot, len(free) - 1)] + waves * self.cost.predict(full)
        return start + self.cost.predict(last) - now

    def delay(self, state: BatchState, now: float) -> float:
        queue, config = state.queue, state.config
        if queue.rows >= config.max_batch_size:
            return 0.0
        oldest = queue.oldest()
        if oldest is None:
            return 0.0
        cost = self.cost.predict(config.max_batch_size) if self.cost.ready else 0.0
        slack = oldest + config.max_latency - cost - now
        if slack <= 0:
            return 0.0
        rate = self.rate.get(now)
        if rate * slack < 1:
            # No other row is expected before the oldest request must go: waiting only adds latency.
            return 0.0
        return min(slack, (config.max_batch_size - queue.rows) / rate)

    def observe(self, rows: int, seconds: float) -> None:
        self.cost.add(rows, seconds)
