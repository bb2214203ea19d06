"""Batching events, so observers (metrics) learn about batches without the batcher knowing them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from blazerpc_core.spec import ModelSpec


class BatchObserver(Protocol):
    """Receives batching events; every method must be cheap and must not raise."""

    def batch_dispatched(self, spec: ModelSpec, rows: int, requests: int) -> None:
        """A batch of ``rows`` rows from ``requests`` requests went to the model."""

    def batch_finished(self, spec: ModelSpec, rows: int, requests: int, seconds: float) -> None:
        """That batch ended (answered or failed); the model call took ``seconds``."""

    def queue_wait(self, spec: ModelSpec, seconds: float) -> None:
        """One request waited ``seconds`` in the queue before its batch started."""

    def queue_depth(self, spec: ModelSpec, rows: int) -> None:
        """The model's queue now holds ``rows`` rows."""


class BatchEvents:
    """Fans events out to subscribed observers (subscribe in ``blazerpc_startup``)."""

    def __init__(self) -> None:
        self._observers: list[BatchObserver] = []

    def subscribe(self, observer: BatchObserver) -> None:
        self._observers.append(observer)

    def batch_dispatched(self, spec: ModelSpec, rows: int, requests: int) -> None:
        for observer in self._observers:
            observer.batch_dispatched(spec, rows, requests)

    def batch_finished(self, spec: ModelSpec, rows: int, requests: int, seconds: float) -> None:
        for observer in self._observers:
            observer.batch_finished(spec, rows, requests, seconds)

    def queue_wait(self, spec: ModelSpec, seconds: float) -> None:
        for observer in self._observers:
            observer.queue_wait(spec, seconds)

    def queue_depth(self, spec: ModelSpec, rows: int) -> None:
        for observer in self._observers:
            observer.queue_depth(spec, rows)
