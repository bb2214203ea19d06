"""Per-model statistics in Triton's terms, for ModelStatistics: every call of a model counts, native or not.

A middleware (innermost in the chain, so it sees the calls that reached the model's
runner) and a batch-event observer feed one :class:`ModelStats` per model version:

* ``inference_count`` counts rows (a batched request of 4 rows is 4 inferences),
  ``execution_count`` model calls (a batch of 32 rows from 20 requests is one);
* ``success`` / ``fail``: requests and their whole time in the server;
* ``queue``: time waiting in the batcher's queue (0 for models that are not batched);
* ``compute_input`` / ``compute_output``: decoding and encoding the protocol's tensors
  (native calls decode in the wire layer, so they count with 0 ns);
* ``compute_infer``: the model call; every request of a batch is charged the batch's time,
  as Triton does;
* ``batch_stats``: executions per batch size (rows) and their model time, as the batcher
  reports them (``batch_finished``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from blazerpc_core.defaults.open_inference.tensor_form import Forms
from blazerpc_core.errors import BlazeError
from blazerpc_core.spec import Streaming

if TYPE_CHECKING:
    from blazerpc_core.call import CallContext, CallNext
    from blazerpc_core.spec import ModelSpec

class Duration:
    """A count and a total in nanoseconds."""

    __slots__ = ("count", "ns")

    def __init__(self) -> None:
        self.count = 0
        self.ns = 0

    def add(self, count: int, seconds: float) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def message(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


class ModelStats:
    """The counters of one model version (see the module docstring)."""

    def __init__(self) -> None:
        self.inference_count = 0
        self.execution_count = 0
        #: Milliseconds since the epoch of the last successful inference (0: none yet).
        self.last_inference = 0
        self.success = Duration()
        self.fail = Duration()
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        #: Batch size → (executions, model time of those executions).
        self.batches: dict[int, Duration] = {}

    def executed(self, rows: int, requests: int, seconds: float) -> None:
        """One model call of ``rows`` rows for ``requests`` requests took ``seconds``."""
        self.execution_count += 1
        batch = self.batches.get(rows)
        if batch is None:
            batch = self.batches[rows] = Duration()
        batch.add(1, seconds)
        self.compute_infer.add(requests, seconds * requests)

    def message(self, name: str, version: str) -> dict[str, Any]:
        """``ModelStatistics`` constructor arguments."""
        durations = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
        return {
            "name": name, "version": version, "last_inference": self.last_inference,
            "inference_count": self.inference_count, "execution_count": self.execution_count,
            "inference_stats": {key: getattr(self, key).message() for key in durations},
            "batch_stats": [
                {"batch_size": size, "compute_input": {"count": d.count}, "compute_infer": d.message(),
                 "compute_output": {"count": d.count}}
                for size, d in sorted(self.batches.items())
            ],
        }


class Statistics:
    """Every model's :class:`ModelStats`; the middleware and the batch observer of the plugin.

    Calls run on the event loop, and batch events are sent from it too, so no lock is needed.
    """

    def __init__(self, forms: Forms) -> None:
        self.forms = forms
        self._stats: dict[tuple[str, str], ModelStats] = {}
        #: Keyed by spec identity (specs are not hashable); the spec is kept to make the id safe.
        self._by_spec: dict[int, tuple[ModelSpec, ModelStats]] = {}

    def of(self, name: str, version: str) -> ModelStats:
        stats = self._stats.get((name, version))
        if stats is None:
            stats = self._stats[(name, version)] = ModelStats()
        return stats

    def _for(self, spec: ModelSpec) -> ModelStats:
        found = self._by_spec.get(id(spec))
        if found is None or found[0] is not spec:
            found = self._by_spec[id(spec)] = (spec, self.of(spec.name, spec.version))
        return found[1]

    # -- the middleware -------------------------------------------------------------------

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        ctx.on_done.append(self._finished)
        entry = getattr(ctx, "entry", None)
        if ctx.model.streaming is not Streaming.UNARY or entry is None or self.forms.of(entry.model).batched:
            return await call_next(ctx)  # streams count in _finished, batches in batch_finished
        start = time.perf_counter()
        try:
            result = await call_next(ctx)
        except BlazeError:
            raise  # refused, timed out or failed before the model: no execution to count
        except Exception:
            self._for(ctx.model).executed(1, 1, time.perf_counter() - start)
            raise
        self._for(ctx.model).executed(1, 1, time.perf_counter() - start)
        return result

    def _finished(self, ctx: CallContext) -> None:
        stats = self._for(ctx.model)
        elapsed = ctx.elapsed()
        if ctx.status != "OK":
            stats.fail.add(1, elapsed)
            return
        stats.success.add(1, elapsed)
        stats.last_inference = int(time.time() * 1000)
        entry = getattr(ctx, "entry", None)
        form = self.forms.of(entry.model) if entry is not None else None
        rows = 1
        if form is not None and form.plan is not None:
            try:
                rows = form.plan.rows(ctx.args)
            except BlazeError:
                rows = 1
        else:
            stats.queue.add(1, 0.0)
        stats.inference_count += rows
        stats.compute_input.count += 1
        stats.compute_output.count += 1
        if ctx.model.streaming is not Streaming.UNARY:
            stats.executed(1, 1, elapsed)

    def add_io(self, spec: ModelSpec, decode_seconds: float, encode_seconds: float) -> None:
        """A protocol call's tensor decoding and encoding time (its ``compute_input`` / ``compute_output``)."""
        stats = self._for(spec)
        stats.compute_input.ns += int(decode_seconds * 1e9)
        stats.compute_output.ns += int(encode_seconds * 1e9)
        stats.success.ns += int((decode_seconds + encode_seconds) * 1e9)

    # -- the batch observer ---------------------------------------------------------------

    def batch_dispatched(self, spec: ModelSpec, rows: int, requests: int) -> None:
        return None

    def batch_finished(self, spec: ModelSpec, rows: int, requests: int, seconds: float) -> None:
        self._for(spec).executed(rows, requests, seconds)

    def queue_wait(self, spec: ModelSpec, seconds: float) -> None:
        self._for(spec).queue.add(1, seconds)

    def queue_depth(self, spec: ModelSpec, rows: int) -> None:
        return None
