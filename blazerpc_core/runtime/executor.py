"""Calling a model function without blocking the event loop, and without letting it hold the server.

Sync functions run in one bounded pool of threads shared by the server; async functions
run on the loop. :class:`Invoker` hides which, and guards the pool three ways:

* **A cap per model.** At most ``max_concurrency`` calls of one model are in the pool at
  once (the rest wait in the model's :class:`ModelBacklog`), so a model that hangs or
  crawls takes some threads, never all: the other models keep theirs.
* **No work for callers that are gone.** A call whose deadline has passed, or that would
  not finish before it (judged from the model's recent call times), is refused: on the
  loop, by a timer, the moment a waiting call could no longer start in time, and again in
  the pool thread just before the model would run, in case the loop was too busy to
  notice. Under overload the model's time goes to calls that can still be answered.
* **Daemon threads.** :class:`ModelPool` threads never hold up process exit, so a
  shutdown is bounded by the grace period whatever model code does.

A thread hop costs tens of microseconds of CPU and a GIL handoff, more than a tiny
function itself (``a + b``, a small numpy op). So a sync function whose calls are
consistently cheaper than ``inline_budget`` runs inline on the loop; :class:`Inlining`
decides. The hop's cost differs between machines by more than their speed does, so the
default budget follows the hop measured at start-up (:func:`auto_inline_budget`).
Promotion judges pool calls by the *thread's CPU time*, which waiting for the GIL under
load does not inflate (wall time would keep a cheap model in the pool exactly when
the hop costs most), and asks that the fastest of them was fast by the clock too: a model
that sleeps or waits on I/O uses little CPU but is never fast, so it is never promoted.
Inline calls are judged by wall time on the loop: a window in which most calls ran over
the budget, or a second call over ``STALL_FACTOR`` times the budget soon after a first,
sends the model back to the pool. One stall alone is forgiven: on a busy machine the
process is preempted for a scheduler tick or two (4-8 ms, measured) every few seconds,
whatever the model. A model sent back may return after a probation twice as long as the last.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Any

from blazerpc_core.errors import DeadlineExceeded

#: Pool calls observed per promotion window, and the share of them that must be cheap.
PROMOTE_AFTER = 200
PROMOTE_SHARE = 0.75
#: Inline calls per demotion window, and the share of them over the budget that demotes.
DEMOTE_WINDOW = 32
DEMOTE_SHARE = 0.5
#: An inline call this many times over the budget is a stall; two within DEMOTE_WINDOW calls demote.
STALL_FACTOR = 10
#: Each demotion doubles the next probation, up to this many times PROMOTE_AFTER.
MAX_PROBATION_FACTOR = 64
#: Weight of the newest call in a model's running mean call time.
_SMOOTHING = 0.2
#: Calls observed before the mean is trusted to refuse work that cannot finish in time.
_MIN_OBSERVED = 5
#: A call is started only with its mean time times _SAFETY, plus _ANSWER_TRAVEL seconds, left:
#: calls vary, and under overload the answer still has to cross a busy loop and the network
#: (without them half the runs of a 20 ms model with 50 ms deadlines ended after the caller left).
_SAFETY = 1.25
_ANSWER_TRAVEL = 0.002
#: Seconds without a measured call after which refusals on the estimate start halving it.
_STALE = 1.0


def default_pool_size() -> int:
    """Threads for sync model code when ``--max-threads`` is not given."""
    return max(8, (os.cpu_count() or 1) + 4)


#: The inline budget when ``--inline-budget-us`` is not given, unless a thread hop costs more (see auto_inline_budget).
DEFAULT_INLINE_BUDGET = 100e-6
#: The most auto_inline_budget ever allows: the loop must stay responsive however slow the hop.
MAX_AUTO_INLINE_BUDGET = 1e-3
#: Round trips timed by measure_hop (after one that starts the thread), and of those, the median is kept.
_HOP_TRIPS = 15


def auto_inline_budget(pool: ModelPool) -> float:
    """The inline budget for this machine: twice what a call through ``pool`` measured, at least 100 us.

    A model is promoted when its calls use at most half the budget, so by default a call
    goes inline when it costs less than the thread hop it would avoid. On most machines the
    hop is 20-40 us of CPU and the budget stays 100 us; on some virtual machines waking the
    loop from a thread costs several times more (160 us measured), and a fixed 100 us kept
    models in the pool whose hop cost more than the model (batched ``x @ W`` at 4 clients:
    673 req/s against 1,091 unbatched).
    """
    return min(MAX_AUTO_INLINE_BUDGET, max(DEFAULT_INLINE_BUDGET, 2 * (pool.hop_seconds or 0.0)))


async def measure_hop(pool: ModelPool) -> float:
    """Median process CPU seconds of one no-op call through ``pool`` awaited on the loop, remembered on the pool.

    Both threads' share counts: the worker's wake-up, the loop's wake-up through its
    self-pipe, and the futures between them, which is what a pooled model call pays.
    """
    await asyncio.wrap_future(pool.submit(_nothing))  # starts a thread, which the timed calls reuse
    trips = []
    for _ in range(_HOP_TRIPS):
        started = time.process_time()
        await asyncio.wrap_future(pool.submit(_nothing))
        trips.append(time.process_time() - started)
    trips.sort()
    pool.hop_seconds = trips[len(trips) // 2]
    return pool.hop_seconds


def _nothing() -> None:
    return None


def default_model_concurrency(pool_size: int) -> int:
    """Calls of one model at once: all but two threads, so one stuck model never starves the rest."""
    return max(1, pool_size - 2)


class ModelPool(Executor):
    """A bounded pool of daemon threads; work submitted after :meth:`shutdown` raises RuntimeError.

    Unlike ``ThreadPoolExecutor``, its threads are never joined at interpreter exit: a model
    call that never returns cannot keep a stopped server's process alive.
    """

    def __init__(self, max_threads: int | None = None, *, name: str = "blazerpc-model") -> None:
        self.max_threads = max_threads or default_pool_size()
        if self.max_threads < 1:
            raise ValueError("a model pool needs at least one thread")
        self._name = name
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False
        self._numbers = itertools.count(1)
        #: CPU seconds one call through the pool costs (:func:`measure_hop`; None until measured).
        self.hop_seconds: float | None = None

    @property
    def busy(self) -> int:
        """Threads running model code now."""
        with self._lock:
            return len(self._threads) - self._idle

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if kwargs:
            fn = _bind_kwargs(fn, kwargs)
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the model pool is shut down")
            self._work.put((future, fn, args))
            if self._idle == 0 and len(self._threads) < self.max_threads:
                thread = threading.Thread(
                    target=self._worker, name=f"{self._name}-{next(self._numbers)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1 if self._idle else 0
        return future

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                with self._lock:
                    self._idle += 1
                continue
            error: BaseException | None = None
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to whoever awaits the future
                result, error = None, exc
            # Idle before the answer is out: whoever the answer wakes may submit the next
            # call at once, and must find this thread free instead of starting another.
            with self._lock:
                self._idle += 1
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
            del future, fn, args, item, result, error

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work; with ``cancel_futures``, drop work not started. Threads are never joined
        (``wait`` is accepted for the Executor interface and ignored: a stuck call must not hang the caller)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = len(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in range(threads):
            self._work.put(None)


def _bind_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return fn(*args, **kwargs)

    return call


class CallTimes:
    """A model's running mean call time (seconds), to tell which calls can still finish in time."""

    __slots__ = ("_count", "_measured", "mean")

    def __init__(self) -> None:
        self.mean = 0.0
        self._count = 0
        #: When (monotonic) the last call was measured.
        self._measured = 0.0

    def add(self, seconds: float) -> None:
        self._count += 1
        self.mean = seconds if self._count == 1 else self.mean + _SMOOTHING * (seconds - self.mean)
        self._measured = time.monotonic()

    def _needed(self) -> float:
        """Seconds a call needs from its start to its answer reaching the caller, by the estimate."""
        return self.mean * _SAFETY + _ANSWER_TRAVEL

    def latest_start(self, deadline: float | None) -> float | None:
        """The last moment (monotonic) a call could start and still finish by ``deadline``;
        None without a deadline or before the estimate is trusted."""
        if deadline is None or self._count < _MIN_OBSERVED:
            return None
        return deadline - self._needed()

    def too_late(self, deadline: float | None, now: float) -> bool:
        """True when a call starting ``now`` would end after ``deadline`` (monotonic seconds).

        A refused call measures nothing, so an estimate that refuses every call would never
        be corrected: once no call has been measured for ``_STALE`` seconds (or twice the
        estimate, if longer), a refusal on the estimate alone halves it, and calls run (and
        measure) again. Under overload calls keep running, so the estimate stays true.
        """
        if deadline is None:
            return False
        left = deadline - now
        if left <= 0:
            return True
        if self._count < _MIN_OBSERVED or left >= self._needed():
            return False
        if now - self._measured > max(_STALE, 2 * self.mean):
            self.mean /= 2
            self._measured = now
        return True


class ModelBacklog:
    """At most ``limit`` calls of one model in the pool at once; the others wait here, oldest first.

    A pool thread that finishes a call of the model takes the model's next waiting call
    itself, so a freed slot is busy again at once: handing it back through the event loop
    (as a semaphore on the loop would) costs two loop turns per call, and under overload,
    with the loop busy refusing late calls, left a 20 ms model's slots idle an eighth of
    the time. Each call is checked against its deadline just before it runs (``run``
    raises DEADLINE_EXCEEDED for one that can no longer be answered in time); most late
    ones were cancelled on the loop before (see ``Invoker._queued``) and cost the thread
    nothing.
    """

    __slots__ = ("_backlog", "_limit", "_lock", "_pool", "_run", "_running")

    def __init__(self, limit: int, pool: Executor, run: Callable[[Sequence[Any], float | None], Any]) -> None:
        self._limit = limit
        self._pool = pool
        self._run = run
        self._running = 0
        self._lock = threading.Lock()
        self._backlog: collections.deque[tuple[Future[Any], Sequence[Any], float | None]] = collections.deque()

    def submit(self, args: Sequence[Any], deadline: float | None) -> Future[Any]:
        """Run ``run(args, deadline)`` in the pool when a slot is free; its future either way."""
        future: Future[Any] = Future()
        with self._lock:
            if self._running >= self._limit:
                self._backlog.append((future, args, deadline))
                return future
            self._running += 1
        try:
            work = self._pool.submit(self._drain, future, args, deadline)
        except BaseException:
            with self._lock:
                self._running -= 1
            raise
        work.add_done_callback(lambda done: self._abandon(future) if done.cancelled() else None)
        return future

    def _abandon(self, future: Future[Any]) -> None:
        """The pool dropped our work before it started (a shutdown): end this call and the waiting ones."""
        with self._lock:
            waiting = [item[0] for item in self._backlog]
            self._backlog.clear()
            self._running -= 1
        for dropped in (future, *waiting):
            dropped.cancel()

    def _drain(self, future: Future[Any], args: Sequence[Any], deadline: float | None) -> None:
        """In a pool thread: run this call, then the model's waiting ones, until none is left."""
        while True:
            if future.set_running_or_notify_cancel():  # False: its caller went away while it waited
                try:
                    future.set_result(self._run(args, deadline))
                except BaseException as exc:  # handed to whoever awaits the future
                    future.set_exception(exc)
            # A failed call's traceback keeps this frame: it must not keep the call (a cycle
            # through the future, freed only by the collector, with its arguments) too.
            del future, args
            with self._lock:
                if not self._backlog:
                    self._running -= 1
                    return
                future, args, deadline = self._backlog.popleft()


class Inlining:
    """Whether a sync model runs inline on the loop; see the module docstring.

    States: ``probation`` (calls go to the pool and are measured), ``inline``, ``off``
    (a budget of 0: always the pool).
    """

    __slots__ = ("_budget", "_calls", "_fastest", "_hits", "_probation", "_since_stall", "state")

    def __init__(self, budget: float) -> None:
        self._budget = budget
        self.state = "probation" if budget > 0 else "off"
        self._probation = PROMOTE_AFTER
        self._calls = 0
        self._hits = 0
        self._fastest = float("inf")
        #: Inline calls since the last stall (a second stall within DEMOTE_WINDOW demotes).
        self._since_stall = DEMOTE_WINDOW

    def pooled(self, cpu_seconds: float, wall_seconds: float) -> None:
        """A pool call on probation used ``cpu_seconds`` of its thread's CPU over ``wall_seconds``."""
        if self.state != "probation":
            return
        self._calls += 1
        self._hits += cpu_seconds * 2 <= self._budget
        self._fastest = min(self._fastest, wall_seconds)
        if self._calls >= self._probation:
            promote = self._hits >= PROMOTE_SHARE * self._calls and self._fastest * 2 <= self._budget
            self._calls = self._hits = 0
            self._fastest = float("inf")
            if promote:
                self.state = "inline"

    def ran_inline(self, seconds: float) -> None:
        """An inline call took ``seconds`` of the loop's wall time."""
        self._since_stall += 1
        if seconds > self._budget:
            if seconds > STALL_FACTOR * self._budget:
                stalled_lately, self._since_stall = self._since_stall <= DEMOTE_WINDOW, 0
                if stalled_lately:
                    self._demote()
                    return
            self._hits += 1
        self._calls += 1
        if self._calls >= DEMOTE_WINDOW:
            slow = self._hits > DEMOTE_SHARE * DEMOTE_WINDOW
            self._calls = self._hits = 0
            if slow:
                self._demote()

    def _demote(self) -> None:
        self.state = "probation"
        self._calls = self._hits = 0
        self._since_stall = DEMOTE_WINDOW
        self._probation = min(self._probation * 2, MAX_PROBATION_FACTOR * PROMOTE_AFTER)


class Invoker:
    """``await invoker(args, deadline)`` calls ``func(*args)`` the right way for its kind.

    ``deadline`` is the caller's deadline in ``time.monotonic()`` seconds (None: none).
    ``enter(call)`` wraps every entry into sync model code in a pool thread (a framework
    plugin sets a thread-local mode there, such as torch's inference mode); it is given a
    no-argument callable and returns its result.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        is_async: bool,
        pool: Executor,
        inline_budget: float = 0.0,
        max_concurrency: int | None = None,
        label: str = "",
        enter: Callable[[Callable[[], Any]], Any] | None = None,
    ) -> None:
        self.func = func
        self.is_async = is_async
        self.pool = pool
        self.label = label or getattr(func, "__name__", "model")
        self.enter = enter
        self.times = CallTimes()
        self._budget = inline_budget
        self.max_concurrency = max_concurrency
        self._backlog = ModelBacklog(max_concurrency, pool, self._run) if max_concurrency else None
        #: The budget under which calls may run on the loop (0 for a model entered through a wrapper).
        self.inline_budget = inline_budget if enter is None else 0.0
        #: Whether calls run on the loop.
        self.inlining = Inlining(self.inline_budget)

    @property
    def inline(self) -> bool:
        return self.inlining.state == "inline"

    def wrapped(
        self, *, func: Callable[..., Any] | None = None, enter: Callable[[Callable[[], Any]], Any] | None = None
    ) -> Invoker:
        """The same model with its function replaced and/or entered through ``enter``.

        Same pool and concurrency cap; a model entered through a wrapper is never run inline
        (the wrapper sets per-thread state).
        """
        return Invoker(
            func or self.func, is_async=self.is_async, pool=self.pool, max_concurrency=self.max_concurrency,
            label=self.label, enter=enter or self.enter,
            inline_budget=self._budget if (enter or self.enter) is None else 0.0,
        )

    def call_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` as model code in the current (pool) thread, through ``enter``."""
        if self.enter is None:
            return fn(*args)
        return self.enter(lambda: fn(*args))

    async def __call__(self, args: Sequence[Any], deadline: float | None = None) -> Any:
        if self.is_async:
            return await self.func(*args)
        inlining = self.inlining
        if inlining.state == "inline":
            if self.times.too_late(deadline, time.monotonic()):
                raise self.late()
            start = time.perf_counter()
            result = self.func(*args)
            inlining.ran_inline(time.perf_counter() - start)
            return result
        if self.times.too_late(deadline, time.monotonic()):
            raise self.late()  # checked here too: refusing on the loop saves the thread hop
        if self._backlog is None:
            result, cpu, wall = await asyncio.wrap_future(self.pool.submit(self._run, args, deadline))
        else:
            result, cpu, wall = await self._queued(self._backlog, args, deadline)
        self.inlining.pooled(cpu, wall)
        return result

    async def _queued(self, backlog: ModelBacklog, args: Sequence[Any], deadline: float | None) -> Any:
        """Run through the model's backlog; a call still waiting when it could no longer start in
        time is refused here, on the loop's own timer.

        Under overload most waiting calls end that way. Refused by the pool thread instead,
        each would cost the thread a wake-up of the loop and a wait for the GIL between two
        runs of the model: idle model time.
        """
        submitted = backlog.submit(args, deadline)
        start_by = self.times.latest_start(deadline)
        give_up = None
        if start_by is not None and not submitted.done():
            give_up = asyncio.get_running_loop().call_later(start_by - time.monotonic(), submitted.cancel)
        try:
            return await asyncio.wrap_future(submitted)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if submitted.cancelled() and task is not None and not task.cancelling():
                raise self.late() from None  # our timer, not the caller, ended the wait
            raise
        finally:
            if give_up is not None:
                give_up.cancel()
            # A failure's traceback keeps this frame; the future holds the failure: no cycle.
            del submitted

    def _run(self, args: Sequence[Any], deadline: float | None) -> tuple[Any, float, float]:
        """In a pool thread: refuse a call that can no longer be answered in time, else run it."""
        if self.times.too_late(deadline, time.monotonic()):
            raise self.late()
        start, cpu_start = time.perf_counter(), time.thread_time()
        result = self.call_sync(self.func, *args)
        cpu = time.thread_time() - cpu_start
        wall = time.perf_counter() - start
        self.times.add(wall)
        return result, cpu, wall

    def late(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"the deadline passed, or is too close to finish, before model {self.label} was called"
        )


def make_pool(max_threads: int | None) -> ModelPool:
    """The server's one thread pool for sync model code (bounded: ``--max-threads``)."""
    return ModelPool(max_threads)
