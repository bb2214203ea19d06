"""Bridges between sync iterators run in pool threads and the event loop.

Sync model code must never block the loop, and a stream must never hold a pool thread
while it waits for a slow client (a handful of slow readers would starve every other
sync model). The two thread bridges therefore hand items over through a small bounded
buffer, and the third needs none:

* :class:`ThreadedIterator` (sync generator → loop): a pool task computes items until
  ``ahead`` items (or ``ahead_bytes``) are buffered, then returns its thread; the loop
  submits the next task once the buffer is half empty. One thread hop per ``ahead // 2``
  items, not one per item, and a bounded amount computed ahead of the client.
* :class:`InlineIterator` (cheap sync generator, on the loop): once the pool measured a
  server-streaming model's items as cheap, its generator is stepped on the loop as the
  sender asks, with no hop at all; it moves to a :class:`ThreadedIterator` if that changes.
* :class:`LoopIterator` (loop → sync model code): a pump task on the loop reads at most
  ``ahead`` messages ahead of the model; the model's thread blocks only when the buffer is
  empty. Not reading is what applies HTTP/2 flow control to the sending client.

Any of them can be closed from the loop at any time; user ``finally`` blocks then run
in a pool thread (on the loop for a generator stepped there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any

from blazerpc_core.errors import Unavailable

if TYPE_CHECKING:
    from blazerpc_core.runtime.executor import Inlining

log = logging.getLogger("blazerpc.streams")

#: Items a sync generator may compute ahead of the client...
DEFAULT_AHEAD = 256
#: ...and bytes (of str, bytes and array items; other items count as none).
DEFAULT_AHEAD_BYTES = 1 << 20
#: Request messages a sync client-streaming model may have received but not yet read.
DEFAULT_READ_AHEAD = 16
#: Items one pool task computes before giving its thread to queued work (fairness).
DEFAULT_BURST = 256


class ThreadedIterator:
    """An async iterator over ``make_iterable()``, stepped in pool threads in bursts.

    ``make_iterable`` itself runs in the pool (it may be a sync model call that builds the
    iterator). Each item is handed to the loop as soon as it is computed, so latency is
    per item even though thread hops are batched: a refill task is submitted only when
    the buffer is half empty. Measured: ~1 µs of CPU per item, against ~50 µs for a hop
    per item (docs/streaming.md).
    """

    def __init__(
        self,
        make_iterable: Callable[[], Iterable[Any]],
        pool: Executor,
        *,
        ahead: int = DEFAULT_AHEAD,
        ahead_bytes: int = DEFAULT_AHEAD_BYTES,
        burst: int = DEFAULT_BURST,
        enter: Callable[[Callable[[], Any]], Any] | None = None,
        measured: Callable[[float, float], None] | None = None,
    ) -> None:
        if ahead < 1 or ahead_bytes < 1 or burst < 1:
            raise ValueError("ahead, ahead_bytes and burst must be at least 1")
        self._loop = asyncio.get_running_loop()
        self._make = make_iterable
        #: Wraps each burst of model code in its pool thread (a framework's per-thread mode).
        self._enter = enter
        #: Told each burst's thread CPU seconds and wall seconds per item (see InlineIterator).
        self._measured = measured
        self._pool = pool
        self._ahead = ahead
        self._ahead_bytes = ahead_bytes
        self._burst = burst
        self._lock = threading.Lock()
        # deque appends and pops are atomic, so the consumer pops without the lock; the
        # lock orders everything that decides who waits for whom. Byte counts have a
        # single writer each (producer / consumer).
        self._items: deque[Any] = deque()
        self._bytes_in = 0
        self._bytes_out = 0
        #: Items computed so far (written by the producer only).
        self._produced = 0
        self._iterator: Iterator[Any] | None = None
        # Guarded by _lock. _filling: a pool task is queued or running (at most one is, so
        # the generator is never entered twice at once).
        self._filling = True
        self._ended = False
        self._stopping = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._idle: asyncio.Future[None] | None = None
        self._submit()

    # -- pool side ------------------------------------------------------------------------

    def _submit(self) -> None:
        try:
            future = self._pool.submit(self._fill)
        except RuntimeError:  # the pool is shut down: the server is closing
            self._close_elsewhere()
            return
        future.add_done_callback(self._check_ran)

    def _check_ran(self, future: Future[None]) -> None:
        # A pool shut down with cancel_futures drops queued tasks silently; the iterator
        # must still be closed, or user finally blocks would run at garbage collection.
        if future.cancelled():
            self._close_elsewhere()

    def _close_elsewhere(self) -> None:
        with self._lock:
            self._stopping = True
            self._error = self._error or Unavailable("the server is shutting down")
        threading.Thread(target=self._fill, name="blazerpc-stream-close", daemon=True).start()

    def _full(self) -> bool:
        return len(self._items) >= self._ahead or self._bytes_in - self._bytes_out >= self._ahead_bytes

    def _fill(self) -> None:
        cpu, wall, produced = time.thread_time(), time.perf_counter(), self._produced
        if self._enter is None:
            ended, error = self._burst_of_items()
        else:
            try:
                ended, error = self._enter(self._burst_of_items)
            except BaseException as exc:  # the wrapper itself failed: end the stream with its error
                ended, error = True, exc
        if self._measured is not None and error is None:
            items = max(1, self._produced - produced)
            with contextlib.suppress(RuntimeError):  # told on the loop, which owns the decision
                self._loop.call_soon_threadsafe(
                    self._measured, (time.thread_time() - cpu) / items, (time.perf_counter() - wall) / items
                )
        with self._lock:
            if ended:
                self._ended = True
                self._error = error or self._error
            del error  # see _burst_of_items
            # A spent burst with room left continues in a fresh task, behind queued work.
            again = not self._ended and not self._stopping and not self._full()
            self._filling = again
            waiter, self._waiter = self._waiter, None
            idle = None
            if not again:
                idle, self._idle = self._idle, None
        if again:
            self._submit()
        self._wake(waiter)
        self._wake(idle)

    def _burst_of_items(self) -> tuple[bool, BaseException | None]:
        """Compute up to ``burst`` items (model code); returns (ended, error)."""
        ended = False
        error: BaseException | None = None
        try:
            if self._iterator is None and not self._stopping:
                self._iterator = iter(self._make())
            for _ in range(self._burst):
                if self._stopping or self._iterator is None:
                    break
                item = next(self._iterator)
                self._bytes_in += _size(item)
                self._produced += 1
                self._items.append(item)
                with self._lock:
                    woken, self._waiter = self._waiter, None
                self._wake(woken)
                if self._full():
                    break
        except StopIteration:
            ended = True
        except BaseException as exc:  # handed to the consumer
            ended, error = True, exc
        if self._stopping and not ended:
            _close(self._iterator)
            ended = True
        try:
            return ended, error
        finally:
            # The error's traceback keeps this frame: holding the error here too would be a
            # cycle that keeps the call's data until the garbage collector runs.
            del error

    def _wake(self, future: asyncio.Future[None] | None) -> None:
        if future is not None:
            # A closed loop means nobody waits any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_resolve, future)

    # -- loop side ------------------------------------------------------------------------

    def __aiter__(self) -> ThreadedIterator:
        return self

    async def __anext__(self) -> Any:
        items = self._items
        while True:
            if items:
                item = items.popleft()
                self._bytes_out += _size(item)
                if not self._filling and self._low():
                    self._refill()
                return item
            with self._lock:
                if items:
                    continue
                if self._ended or self._stopping:
                    error, self._error = self._error, None
                    if error is not None:
                        try:
                            raise error
                        finally:
                            del error  # see _burst_of_items
                    raise StopAsyncIteration
                waiter = self._waiter = self._loop.create_future()
            if not self._filling:
                self._refill()
            await waiter

    def ready(self, max_items: int, max_bytes: int) -> list[Any]:
        """Up to ``max_items`` items (about ``max_bytes``) that are computed already, without waiting.

        Lets the sender write several messages at once; returns [] when none is ready.
        """
        items = self._items
        taken: list[Any] = []
        size = 0
        while items and len(taken) < max_items and size < max_bytes:
            item = items.popleft()
            item_size = _size(item)
            self._bytes_out += item_size
            size += item_size
            taken.append(item)
        if taken and not self._filling and self._low():
            self._refill()
        return taken

    def _low(self) -> bool:
        return len(self._items) <= self._ahead // 2 and self._bytes_in - self._bytes_out <= self._ahead_bytes // 2

    def _refill(self) -> None:
        with self._lock:
            if self._filling or self._ended or self._stopping:
                return
            self._filling = True
        self._submit()

    async def aclose(self) -> None:
        """Stop computing items and close the iterator in a pool thread; wait until it is closed.

        An item being computed is finished first: a running ``next()`` cannot be interrupted.
        """
        with self._lock:
            if not self._stopping:
                self._stopping = True
                self._items.clear()
            start = not self._filling and not self._ended
            if start:
                self._filling = True
            idle = None
            if self._filling:
                idle = self._idle = self._idle or self._loop.create_future()
        if start:
            self._submit()
        if idle is not None:
            await asyncio.shield(idle)


class InlineIterator:
    """An async iterator over a cheap sync generator, stepped on the loop: no thread hop at all.

    For server-streaming models whose items the pool measured as cheap: the model's
    :class:`~blazerpc_core.runtime.executor.Inlining` promotes them as it does unary
    models. Each step is timed and reported; once the model is sent back to the pool, the
    rest of the stream continues in a :class:`ThreadedIterator` (``threaded``). Items are
    computed only when the sender asks (``ready`` computes at most what one write takes),
    and other work gets the loop every ``burst`` items.
    """

    def __init__(
        self,
        make_iterable: Callable[[], Iterable[Any]],
        inlining: Inlining,
        threaded: Callable[[Callable[[], Iterable[Any]]], ThreadedIterator],
        *,
        burst: int = DEFAULT_BURST,
    ) -> None:
        self._make = make_iterable
        self._inlining = inlining
        self._threaded = threaded
        self._burst = burst
        self._iterator: Iterator[Any] | None = None
        self._pooled: ThreadedIterator | None = None
        self._ended = False
        #: An error ``ready`` met, raised at the next ``__anext__``.
        self._error: Exception | None = None
        self._since_yield = 0

    def __aiter__(self) -> InlineIterator:
        return self

    async def __anext__(self) -> Any:
        if self._pooled is None and not self._ended and self._inlining.state != "inline":
            self._to_pool()
        if self._pooled is not None:
            return await self._pooled.__anext__()
        if self._error is not None:
            error, self._error = self._error, None
            try:
                raise error
            finally:
                del error  # the traceback keeps this frame: no cycle through it
        self._since_yield += 1
        if self._since_yield >= self._burst:
            self._since_yield = 0
            await asyncio.sleep(0)  # other calls' work runs between long runs of items
        item = self._step()
        if item is _END:
            raise StopAsyncIteration
        return item

    def ready(self, max_items: int, max_bytes: int) -> list[Any]:
        """Up to ``max_items`` more items (about ``max_bytes``), computed now, to go out in one write."""
        if self._pooled is not None:
            return self._pooled.ready(max_items, max_bytes)
        taken: list[Any] = []
        size = 0
        while len(taken) < max_items and size < max_bytes and self._inlining.state == "inline":
            try:
                item = self._step()
            except Exception as exc:  # raised by __anext__, once the items before it are sent
                self._error = exc
                break
            if item is _END:
                break
            size += _size(item)
            taken.append(item)
        self._since_yield += len(taken)
        return taken

    def _step(self) -> Any:
        """The next item, or _END: model code, timed for the inlining decision."""
        if self._ended:
            return _END
        started = time.perf_counter()
        try:
            if self._iterator is None:
                self._iterator = iter(self._make())
            return next(self._iterator)
        except StopIteration:
            self._ended = True
            return _END
        except BaseException:
            self._ended = True
            raise
        finally:
            self._inlining.ran_inline(time.perf_counter() - started)

    def _to_pool(self) -> None:
        iterator = self._iterator
        self._pooled = self._threaded(self._make if iterator is None else lambda: iterator)

    async def aclose(self) -> None:
        """Close the generator: its ``finally`` blocks run here, or in the pool once the stream moved there."""
        self._ended = True
        if self._pooled is not None:
            await self._pooled.aclose()
            return
        _close(self._iterator)


#: What InlineIterator._step returns once the generator is done.
_END = object()


def _close(iterator: Iterator[Any] | None) -> None:
    """Close a model's generator (its ``finally`` blocks run); an error there is only logged."""
    close = getattr(iterator, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:  # nobody is left to receive it
        log.warning("closing a model's stream raised", exc_info=True)


class LoopIterator:
    """A sync iterator for model code in a thread, fed from an async iterator on the loop.

    Create it on the loop. Reading starts when the model first asks for an item, so
    nothing is read for a call that middleware refuses. ``aclose(error)`` stops reading and
    makes a thread blocked in ``next()`` (or its next call) raise ``error``, so user code
    unwinds and its ``finally`` blocks run.
    """

    def __init__(self, source: AsyncIterator[Any], *, ahead: int = DEFAULT_READ_AHEAD) -> None:
        if ahead < 1:
            raise ValueError("ahead must be at least 1")
        self._loop = asyncio.get_running_loop()
        self._source = source
        self._ahead = ahead
        self._cond = threading.Condition()
        # Guarded by _cond: buffered items, whether the source ended (and how), whether
        # the pump was asked for, and whether it is paused on a full buffer.
        self._items: deque[Any] = deque()
        self._ended = False
        self._error: BaseException | None = None
        self._started = False
        self._paused = False
        self._resume = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    def _start(self) -> None:
        # On the loop, like aclose(), so the two cannot interleave.
        if not self._ended:
            self._pump = self._loop.create_task(self._run())

    async def _run(self) -> None:
        error: BaseException | None = None
        try:
            async for item in self._source:
                with self._cond:
                    self._items.append(item)
                    if len(self._items) >= self._ahead:
                        self._resume.clear()
                        self._paused = True
                    self._cond.notify()
                    paused = self._paused
                if paused:
                    await self._resume.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # raised in the model's thread
            error = exc
        finally:
            with self._cond:
                if not self._ended:
                    self._ended = True
                    self._error = error
                self._cond.notify_all()
            del error  # see ThreadedIterator._burst_of_items

    def __iter__(self) -> LoopIterator:
        return self

    def __next__(self) -> Any:
        with self._cond:
            if not self._started:
                self._started = True
                self._loop.call_soon_threadsafe(self._start)
            while not self._items and not self._ended:
                self._cond.wait()
            if not self._items:
                error, self._error = self._error, None
                if error is not None:
                    try:
                        raise error
                    finally:
                        del error  # a traceback keeps this frame: it must not keep the error
                raise StopIteration
            item = self._items.popleft()
            resume = self._paused and len(self._items) <= self._ahead // 2
            if resume:
                self._paused = False
        if resume:
            self._loop.call_soon_threadsafe(self._resume.set)
        return item

    async def aclose(self, error: BaseException | None = None) -> None:
        """Stop reading; the model's thread sees ``error`` (or the end) at its next item."""
        with self._cond:
            if not self._ended:
                self._ended = True
                self._error = error
                self._items.clear()
            self._cond.notify_all()
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)


def _size(item: Any) -> int:
    """Bytes an item holds, for the buffer bound: cheap and exact for the common big items."""
    if isinstance(item, (bytes, bytearray, str, memoryview)):
        return len(item)
    nbytes = getattr(item, "nbytes", None)
    return nbytes if isinstance(nbytes, int) else 0


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
