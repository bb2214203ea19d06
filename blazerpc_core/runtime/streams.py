"""Bridges between sync iterators running in threads and the event loop.

A sync generator runs in one pool thread for the life of its stream and hands items to
the loop through a small bounded buffer: at most ``ahead`` items are computed before the
client reads them (flow control), and the loop is woken only when it is waiting (cheap
per item). Closing the stream stops the generator in its own thread, so user ``finally``
blocks run.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_END = object()


class ThreadedIterator:
    """An async iterator over ``make_iterable()`` evaluated in a pool thread."""

    def __init__(self, make_iterable: Callable[[], Iterable[Any]], pool: ThreadPoolExecutor, *, ahead: int = 8) -> None:
        self._loop = asyncio.get_running_loop()
        self._make = make_iterable
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._space = threading.Semaphore(ahead)
        self._waiter: asyncio.Future[None] | None = None
        self._stopped = False
        self._error: BaseException | None = None
        self._done = pool.submit(self._produce)

    def _produce(self) -> None:
        iterator: Iterator[Any] | None = None
        try:
            iterator = iter(self._make())
            for item in iterator:
                self._put(item)
                self._space.acquire()
                if self._stopped:
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._error = exc
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # noqa: BLE001
                    self._error = self._error or exc
            self._put(_END)

    def _put(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_wake, waiter)

    def __aiter__(self) -> ThreadedIterator:
        return self

    async def __anext__(self) -> Any:
        while True:
            with self._lock:
                if self._items:
                    item = self._items.popleft()
                    break
                waiter = self._waiter = self._loop.create_future()
            await waiter
        if item is _END:
            self._items.appendleft(_END)
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            raise StopAsyncIteration
        self._space.release()
        return item

    async def aclose(self) -> None:
        """Stop the producer (its generator's ``close()`` runs in its thread) and wait for it."""
        self._stopped = True
        self._space.release()
        await asyncio.wrap_future(self._done)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class LoopIterator:
    """A sync iterator, for code in a thread, that pulls items from an async iterator on the loop."""

    def __init__(self, source: AsyncIterator[Any], loop: asyncio.AbstractEventLoop) -> None:
        self._source = source
        self._loop = loop

    def __iter__(self) -> LoopIterator:
        return self

    def __next__(self) -> Any:
        future = asyncio.run_coroutine_threadsafe(_next_or_end(self._source), self._loop)
        item = future.result()
        if item is _END:
            raise StopIteration
        return item


async def _next_or_end(source: AsyncIterator[Any]) -> Any:
    try:
        return await source.__anext__()
    except StopAsyncIteration:
        return _END
