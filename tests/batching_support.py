"""Helpers for the batching tests: an event recorder plugin and a model gate.

Concurrency is made deterministic with events, never with sleeps: a model blocks on a
:class:`Gate` while requests queue up, and the test waits for the queue depth the
:class:`Recorder` reports before it lets the model go.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from blazerpc_core import hookimpl

WAIT = 30.0


class Recorder:
    """A plugin that subscribes to the server's batch events and records them."""

    __name__ = "batch-recorder"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.dispatched: list[tuple[str, int, int]] = []
        self.depth: dict[str, int] = {}
        self.waits: list[tuple[str, float]] = []

    @hookimpl
    def blazerpc_startup(self, context: Any) -> None:
        context.batch_events.subscribe(self)

    def batch_dispatched(self, spec: Any, rows: int, requests: int) -> None:
        with self._cond:
            self.dispatched.append((spec.name, rows, requests))
            self._cond.notify_all()

    def queue_wait(self, spec: Any, seconds: float) -> None:
        with self._cond:
            self.waits.append((spec.name, seconds))

    def queue_depth(self, spec: Any, rows: int) -> None:
        with self._cond:
            self.depth[spec.name] = rows
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, WAIT):
                raise AssertionError(f"timed out waiting for {what}: depth={self.depth} dispatched={self.dispatched}")

    def wait_depth(self, model: str, rows: int) -> None:
        self.wait_for(lambda: self.depth.get(model) == rows, f"{rows} queued rows of {model}")


class Gate:
    """Holds the first model call until the test opens it; records what every call received."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.calls: list[Any] = []
        self._lock = threading.Lock()

    def enter(self, received: Any) -> None:
        with self._lock:
            self.calls.append(received)
        self.entered.set()
        if not self.opened.wait(WAIT):
            raise RuntimeError("the test never opened the gate")

    def wait_entered(self) -> None:
        assert self.entered.wait(WAIT), "the model was never called"

    def open(self) -> None:
        self.opened.set()
