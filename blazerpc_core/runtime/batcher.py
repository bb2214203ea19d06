"""The batcher: one per batched model; queues requests and calls the model once per batch.

Each request becomes a :class:`~blazerpc_core.runtime.queue.Pending` holding a future its
handler awaits: no task or thread per request. One loop task per model asks the
:class:`~blazerpc_core.runtime.dispatch.DispatchRule` when to go, takes a batch off the
queue (priority order, at most ``max_batch_size`` rows, dropping requests whose deadline
passed) and starts it while up to ``max_concurrent_batches`` run. A sync model runs in
the server's thread pool together with the joining and splitting of its batch, so large
tensors are never copied on the event loop; an async model runs on the loop. Batches
that measure consistently cheap run inline on the loop instead (the batcher's own
:class:`~blazerpc_core.runtime.executor.Inlining`), and a request that finds such a
model idle is called alone at once when the rule would not hold it anyway, or when the
model's calls cost less than queueing (``ALONE_BELOW``); see ``_alone_pays``. When a
batch ends, each waiting future gets its share of the result, or its own error.

A handler cancelled while its request is queued (client gone, deadline passed) removes
the request at once, so it never reaches the model and stops counting against the
queue bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from blazerpc_core.call import CallContext
from blazerpc_core.errors import BlazeError, DeadlineExceeded, ResourceExhausted, Unavailable
from blazerpc_core.runtime.dispatch import BatchConfig, DispatchRule
from blazerpc_core.runtime.events import BatchEvents
from blazerpc_core.runtime.executor import Inlining
from blazerpc_core.runtime.plan import BatchPlan
from blazerpc_core.runtime.queue import Pending, RequestQueue, read_priority

if TYPE_CHECKING:
    from blazerpc_core.method import CompiledModel
    from blazerpc_core.runtime.policy import ModelInvoker

log = logging.getLogger("blazerpc.batcher")

#: A model call shorter than this (seconds) costs less than queueing one request for a batch,
#: so a request that finds such a model idle runs alone at once (measured on ``x @ W``: the
#: queue, its future, the extra loop turn and the split cost about 15 us a request).
ALONE_BELOW = 20e-6
#: Inline calls per judgement of a model's typical call time (their median).
TYPICAL_WINDOW = 16

#: What one batch yields: an outcome (result or exception) per request, the model's seconds,
#: and the thread CPU seconds of the whole batch when it ran in the pool (None otherwise).
Computed = tuple[list[Any], float, float | None]


class Batcher:
    """A :class:`~blazerpc_core.runtime.policy.Runner` that batches; see the module docstring."""

    def __init__(
        self,
        model: CompiledModel,
        invoker: ModelInvoker,
        events: BatchEvents,
        *,
        plan: BatchPlan,
        config: BatchConfig,
        rule: DispatchRule,
    ) -> None:
        self.spec = model.spec
        self.label = plan.label
        self.plan = plan
        self.config = config
        self.rule = rule
        self.queue = RequestQueue(aging=config.priority_aging)
        self.running = 0
        self.inflight: list[tuple[float, int]] = []
        self._invoker = invoker
        self._events = events
        self._closed = False
        self._loop_task: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        #: Queued rows at which an arrival wakes the sleeping loop (None: arrivals do not).
        self._wake_rows: int | None = None
        self._batches: set[asyncio.Future[Any]] = set()
        #: Whether batches of this (sync) model are cheap enough to compute on the loop.
        self.inlining = Inlining(invoker.inline_budget)
        #: What the model's inline calls typically take, to tell when a lone request pays.
        self.typical = TypicalTime()
        #: The rule never holds a request that finds the model idle (see DispatchRule).
        self._sends_lone_requests = getattr(rule, "waits_when_idle", True) is False

    # -- Runner ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(
                self._dispatch_loop(), name=f"blazerpc-batcher-{self.spec.label}"
            )

    async def submit(self, args: Sequence[Any], ctx: CallContext) -> Any:
        if self._closed:
            raise Unavailable(f"model {self.label} is shutting down")
        rows = self.plan.rows(args)
        priority = read_priority(ctx.metadata)
        remaining = ctx.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded(f"the deadline passed before model {self.label} was called")
        if rows == 0:
            # Nothing to join: the model answers an empty request directly (it wakes no batch).
            return await self._invoker(args, ctx.expires_at())
        queue, config = self.queue, self.config
        # A request larger than the whole queue is still served when it can be alone: the
        # bound is against overload, and RESOURCE_EXHAUSTED would make clients retry forever.
        if queue.rows and queue.rows + rows > config.max_queue_size:
            raise ResourceExhausted(
                f"model {self.label} is overloaded: its queue holds {queue.rows} rows and this request "
                f"has {rows}, over the limit of {config.max_queue_size} rows (max_queue_size); retry later"
            )
        now = time.monotonic()
        self.rule.admit(self, rows, now, remaining)
        if not self.running and not queue.count and self._alone_pays():
            return self._run_alone(args, rows, None if remaining is None else now + remaining)
        item = Pending(
            args, rows, asyncio.get_running_loop().create_future(), priority=priority, enqueued=now,
            deadline=None if remaining is None else now + remaining, key=self.plan.shape_key(args),
        )
        queue.push(item)
        if not self.running and self._go_now(now):
            # The model is idle and the rule says go: dispatch here rather than waking the
            # dispatch loop for it, so the model starts at once (deferring to the end of the
            # loop turn, to gather that turn's arrivals, cost an accelerator-like model 5%).
            self._dispatch(now)
        else:
            self._events.queue_depth(self.spec, queue.rows)
            if self._wake_rows is not None and queue.rows >= self._wake_rows:
                self._wake()
        try:
            return await item.future
        except asyncio.CancelledError:
            if item.queued:
                queue.discard(item)
                self._events.queue_depth(self.spec, queue.rows)
            raise
        finally:
            # A failure's traceback keeps this frame, and the item's future holds the failure:
            # without this, a cycle would keep the request until the garbage collector runs.
            del item

    async def stream(self, args: Sequence[Any], ctx: CallContext) -> AsyncIterator[Any]:
        raise BlazeError(f"model {self.label} is batched, and batched models do not stream")

    async def stop(self) -> None:
        """Refuse new requests, fail queued ones (UNAVAILABLE), and release running batches."""
        self._closed = True
        for item in self.queue.drain():
            _settle(item.future, Unavailable(f"model {self.label} is shutting down"))
        self._events.queue_depth(self.spec, 0)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        # The server drained before calling stop; a batch still running has no caller
        # left that waits for it, and a stuck model must not hold up shutdown.
        for batch in list(self._batches):
            batch.cancel()

    # -- the dispatch loop ---------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        queue, config, rule = self.queue, self.config, self.rule
        while True:
            if not queue.count:
                await self._sleep(None, wake_rows=1)
                continue
            if self.running >= config.max_concurrent_batches:
                await self._sleep(None, wake_rows=None)
                continue
            now = time.monotonic()
            try:
                delay = rule.delay(self, now)
            except Exception:
                log.exception("dispatch rule of model %s failed; dispatching now", self.label)
                delay = 0.0
            if delay > 0:
                await self._sleep(delay, wake_rows=config.max_batch_size)
                continue
            self._dispatch(now)

    def _alone_pays(self) -> bool:
        """Whether a request that finds the model idle, nothing queued, is cheaper called alone, on the loop.

        Only for a sync model running inline, and then when either
        - the rule never holds such a request (``waits_when_idle = False``, as
          size-or-timeout): it would run inline as a batch of one at once, and the queue,
          its future and the split would only add to it (at one client, about 40 us of
          server CPU per call for ``x @ W``); or
        - the model's calls typically take less than queueing one request costs
          (``ALONE_BELOW``): waiting to join others would save less model time than the
          queue spends. Judged on the median of recent inline calls, not the running mean:
          one garbage collection or preemption during a 2 us call moved the mean past the
          threshold, and cheap requests took the queue until it decayed.
        """
        if self.inlining.state != "inline" or self._invoker.is_async:
            return False
        return self._sends_lone_requests or self.typical.seconds < ALONE_BELOW

    def _run_alone(self, args: Sequence[Any], rows: int, deadline: float | None) -> Any:
        """One request as a batch of its own, computed here: no queue, no future, no join, no loop turn."""
        invoker = self._invoker
        if deadline is not None and invoker.times.too_late(deadline, time.monotonic()):
            raise invoker.late()
        self._events.batch_dispatched(self.spec, rows, 1)
        started = time.perf_counter()
        try:
            # Inline implies no ``enter`` (ModelInvoker.inline_budget), so the model is called directly.
            result = invoker.func(*args) if invoker.enter is None else invoker.call_sync(invoker.func, *args)
            seconds = time.perf_counter() - started
            invoker.times.add(seconds)
            self.typical.add(seconds)
            outcome = self.plan.split(result, (rows,))[0]
        except Exception:
            seconds = time.perf_counter() - started
            self.inlining.ran_inline(seconds)
            self._batch_ended(rows, 1, seconds, observe=False)
            raise
        self.inlining.ran_inline(seconds)
        self._batch_ended(rows, 1, seconds, observe=True)
        if isinstance(outcome, BaseException):
            try:
                raise _raisable(outcome)
            finally:
                del outcome  # as in submit: the traceback keeps this frame, which must not keep the error
        return outcome

    def _go_now(self, now: float) -> bool:
        try:
            return self.rule.delay(self, now) <= 0
        except Exception:
            log.exception("dispatch rule of model %s failed; dispatching now", self.label)
            return True

    async def _sleep(self, delay: float | None, *, wake_rows: int | None) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        self._wake_rows = wake_rows
        timer = None if delay is None else loop.call_later(delay, _wake_future, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            self._wake_rows = None
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        if self._waiter is not None:
            _wake_future(self._waiter)

    def _dispatch(self, now: float) -> None:
        batch, expired = self.queue.take(self.config.max_batch_size, now)
        for item in expired:
            _settle(item.future, DeadlineExceeded(f"the deadline passed while queued for model {self.label}"))
        self._events.queue_depth(self.spec, self.queue.rows)
        if not batch:
            return
        for item in batch:
            self._events.queue_wait(self.spec, now - item.enqueued)
        self._events.batch_dispatched(self.spec, sum(item.rows for item in batch), len(batch))
        self._start(batch, now)

    def _start(self, batch: list[Pending], now: float) -> None:
        """Run one batch: on the loop (async models, or sync ones cheap enough), else in the pool."""
        sizes = [item.rows for item in batch]
        parts = [item.args for item in batch]
        future: asyncio.Future[Computed]
        try:
            if self._invoker.is_async:
                future = asyncio.ensure_future(self._compute_async(parts, sizes))
            elif self.inlining.state == "inline":
                future = asyncio.get_running_loop().create_future()
                started = time.perf_counter()
                try:
                    computed = self._compute(parts, sizes, [item.deadline for item in batch])
                    self.typical.add(computed[1])
                    future.set_result(computed)
                except Exception as exc:
                    future.set_exception(exc)
                self.inlining.ran_inline(time.perf_counter() - started)
            else:
                deadlines = [item.deadline for item in batch]
                future = asyncio.wrap_future(self._invoker.pool.submit(self._compute_timed, parts, sizes, deadlines))
        except Exception as exc:
            # Taken off the queue but never started: their callers must still get an answer.
            log.exception("could not start a batch of model %s", self.label)
            for item in batch:
                _settle(item.future, exc)
            return
        entry = (now, sum(sizes))
        self.running += 1
        self.inflight.append(entry)
        if future.done():
            # It ran inline: finish now, so the next request of this turn finds the model idle.
            self._finish(batch, entry, future)
            return
        self._batches.add(future)
        future.add_done_callback(functools.partial(self._finish, batch, entry))

    def _finish(self, batch: list[Pending], entry: tuple[float, int], future: asyncio.Future[Computed]) -> None:
        self._batches.discard(future)
        self.running -= 1
        self.inflight.remove(entry)
        outcomes: Sequence[Any]
        seconds = time.monotonic() - entry[0]
        answered = False
        if future.cancelled():
            outcomes = [Unavailable(f"model {self.label} stopped before this batch finished")] * len(batch)
        elif (error := future.exception()) is not None:
            outcomes = [error] * len(batch)
        else:
            outcomes, seconds, cpu = future.result()
            answered = True
            if cpu is not None:
                # Judged per row: once inline, a cheap model's lone requests run one row at a
                # time, while the batches measured here grew with the load (at 16 clients,
                # 8-row batches of x @ W kept it in the pool for good). A model that sleeps
                # or waits still fails on the batch's whole wall time.
                self.inlining.pooled(cpu / entry[1], seconds)
        self._batch_ended(entry[1], len(batch), seconds, observe=answered)
        for item, outcome in zip(batch, outcomes, strict=True):
            _settle(item.future, outcome)
        self._wake()

    def _batch_ended(self, rows: int, requests: int, seconds: float, *, observe: bool) -> None:
        """Tell the rule (when the model answered) and the observers that a batch ended."""
        if observe:
            try:
                self.rule.observe(rows, seconds)
            except Exception:
                log.exception("dispatch rule of model %s failed to observe a batch", self.label)
        self._events.batch_finished(self.spec, rows, requests, seconds)

    # -- running one batch -----------------------------------------------------------------

    def _compute_timed(
        self, parts: list[Sequence[Any]], sizes: list[int], deadlines: list[float | None]
    ) -> Computed:
        """:meth:`_compute` in a pool thread, with the thread CPU time it took (for promotion inline)."""
        cpu_start = time.thread_time()
        outcomes, seconds, _ = self._compute(parts, sizes, deadlines)
        return outcomes, seconds, time.thread_time() - cpu_start

    def _compute(
        self, parts: list[Sequence[Any]], sizes: list[int], deadlines: list[float | None]
    ) -> Computed:
        """Join, call and split in a pool thread (sync models).

        Requests whose deadline passed while the batch waited for a thread, or that would
        not get their answer before it, are answered DEADLINE_EXCEEDED here and left out of
        the call: the model's time goes to rows someone still waits for.
        """
        invoker = self._invoker
        now = time.monotonic()
        late = [invoker.times.too_late(deadline, now) for deadline in deadlines]
        if any(late):
            live = [i for i, skip in enumerate(late) if not skip]
            outcomes: list[Any] = [invoker.late() if skip else None for skip in late]
            if live:
                done, seconds, _ = self._compute([parts[i] for i in live], [sizes[i] for i in live], [None] * len(live))
                for index, outcome in zip(live, done, strict=True):
                    outcomes[index] = outcome
                return outcomes, seconds, None
            return outcomes, 0.0, None
        plan = self.plan
        try:
            args = plan.join(parts)
        except Exception:
            return self._one_by_one(parts, sizes)
        start = time.perf_counter()
        result = invoker.call_sync(invoker.func, *args)
        seconds = time.perf_counter() - start
        invoker.times.add(seconds)
        return plan.split(result, sizes), seconds, None

    def _one_by_one(self, parts: list[Sequence[Any]], sizes: list[int]) -> Computed:
        # Requests that cannot be concatenated (shape_key did not tell them apart) still
        # must not fail each other: each runs alone.
        invoker = self._invoker
        outcomes: list[Any] = []
        start = time.perf_counter()
        for args, rows in zip(parts, sizes, strict=True):
            try:
                outcomes.extend(self.plan.split(invoker.call_sync(invoker.func, *args), [rows]))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes, time.perf_counter() - start, None

    async def _compute_async(self, parts: list[Sequence[Any]], sizes: list[int]) -> Computed:
        """Join, call and split on the loop (async models)."""
        plan = self.plan
        try:
            args = plan.join(parts)
        except Exception:
            outcomes: list[Any] = []
            start = time.perf_counter()
            for one, rows in zip(parts, sizes, strict=True):
                try:
                    outcomes.extend(plan.split(await self._invoker.func(*one), [rows]))
                except Exception as exc:
                    outcomes.append(exc)
            return outcomes, time.perf_counter() - start, None
        start = time.perf_counter()
        result = await self._invoker.func(*args)
        seconds = time.perf_counter() - start
        return plan.split(result, sizes), seconds, None


class TypicalTime:
    """The median of a model's last ``TYPICAL_WINDOW`` measured calls (seconds; inf before any).

    Robust where a running mean is not: a rare long call (a collection, a preemption) does
    not move it, and it follows a lasting change within one window.
    """

    __slots__ = ("_window", "seconds")

    def __init__(self) -> None:
        self.seconds = float("inf")
        self._window: list[float] = []

    def add(self, seconds: float) -> None:
        if seconds <= 0:
            return  # a batch whose requests were all late ran nothing and measured nothing
        window = self._window
        window.append(seconds)
        if len(window) >= TYPICAL_WINDOW:
            window.sort()
            self.seconds = window[TYPICAL_WINDOW // 2]
            window.clear()


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(_raisable(outcome))
    else:
        future.set_result(outcome)


def _raisable(error: BaseException) -> BaseException:
    """``error``, unless it is a StopIteration: futures and coroutines refuse those (raised in
    a coroutine it would end the awaiting coroutine silently)."""
    if isinstance(error, StopIteration):
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def _wake_future(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
