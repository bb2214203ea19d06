"""A model gate for the batching tests.

Concurrency is made deterministic with events, never with sleeps: a model blocks on a
:class:`Gate` while requests queue up, and the test waits for the queue depth that
:class:`blazerpc_core.testing.BatchRecorder` reports before it lets the model go.
"""

from __future__ import annotations

import threading
from typing import Any

WAIT = 30.0


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
