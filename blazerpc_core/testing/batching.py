"""A plugin recording batch events, so batching tests wait for a queue depth instead of sleeping."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from blazerpc_core.markers import hookimpl


class BatchRecorder:
    """A plugin that records the server's batch events: ``blazerpc_serve(app, plugins=[recorder])``.

    ``dispatched`` holds ``(model, rows, requests)`` per batch handed to a model, ``depth``
    the latest number of queued rows per model, ``waits`` ``(model, seconds)`` per request
    that left a queue. Tests wait on these (:meth:`wait_depth`, :meth:`wait_for`) rather
    than sleep.

    With ``expected``, :attr:`gate` is set once that many rows have been dispatched or are
    queued. A model that waits on it in its first call keeps the batcher busy until every
    other request is queued, so how the rest is batched does not depend on timing.
    """

    __name__ = "batch-recorder"

    def __init__(self, expected: int | None = None, *, timeout: float = 30.0) -> None:
        self.expected = expected
        self.timeout = timeout
        self.dispatched: list[tuple[str, int, int]] = []
        self.depth: dict[str, int] = {}
        self.waits: list[tuple[str, float]] = []
        self.gate = threading.Event()
        self._cond = threading.Condition()

    @property
    def batches(self) -> list[tuple[int, int]]:
        """``(rows, requests)`` per dispatched batch, of every model."""
        with self._cond:
            return [(rows, requests) for _, rows, requests in self.dispatched]

    @hookimpl
    def blazerpc_startup(self, context: Any) -> None:
        context.batch_events.subscribe(self)

    def batch_dispatched(self, spec: Any, rows: int, requests: int) -> None:
        with self._cond:
            self.dispatched.append((spec.name, rows, requests))
            self._cond.notify_all()

    def batch_finished(self, spec: Any, rows: int, requests: int, seconds: float) -> None:
        return None

    def queue_wait(self, spec: Any, seconds: float) -> None:
        with self._cond:
            self.waits.append((spec.name, seconds))

    def queue_depth(self, spec: Any, rows: int) -> None:
        with self._cond:
            self.depth[spec.name] = rows
            done = sum(r for _, r, _ in self.dispatched)
            if self.expected is not None and done + rows >= self.expected:
                self.gate.set()
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        """Block until ``predicate()`` holds (checked after every event); fail naming ``what``."""
        with self._cond:
            if not self._cond.wait_for(predicate, self.timeout):
                raise AssertionError(f"timed out waiting for {what}: depth={self.depth} dispatched={self.dispatched}")

    def wait_depth(self, model: str, rows: int) -> None:
        """Block until ``rows`` rows of ``model`` are queued."""
        self.wait_for(lambda: self.depth.get(model) == rows, f"{rows} queued rows of {model}")
