"""Calling a model function without blocking the event loop.

Sync functions run in one bounded thread pool shared by the server; async functions run
on the loop. ``Invoker`` hides which.

A thread hop costs tens of microseconds of CPU and a GIL handoff, more than a tiny
function itself (``a + b``). So a sync function whose calls are consistently cheaper than
``inline_budget`` is promoted to run inline on the loop, where it blocks the loop for less
time than the hop would. "Consistently": at least ``PROMOTE_SHARE`` of a window of
``PROMOTE_AFTER`` calls in the pool took under half the budget (wall time, so a function
that sleeps or waits on I/O is never promoted; a window rather than a streak, because
under load a few pool timings are inflated by waiting for the GIL). The first inline call
that exceeds the budget demotes the function back to the pool for good, so a function
that is sometimes slow blocks the loop at most once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: Pool calls observed per promotion window, and the share of them that must be fast.
PROMOTE_AFTER = 200
PROMOTE_SHARE = 0.9


class Invoker:
    """``await invoker(args)`` calls ``func(*args)`` the right way for its kind."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        is_async: bool,
        pool: ThreadPoolExecutor,
        inline_budget: float = 0.0,
    ) -> None:
        self.func = func
        self.is_async = is_async
        self.pool = pool
        self._budget = inline_budget
        #: True while calls run on the loop; False once demoted or while still on probation.
        self.inline = False
        #: Calls and fast calls in the current window; None once promotion is ruled out.
        self._window: list[int] | None = [0, 0] if inline_budget > 0 else None

    async def __call__(self, args: Sequence[Any]) -> Any:
        if self.is_async:
            return await self.func(*args)
        if self.inline:
            start = time.perf_counter()
            result = self.func(*args)
            if time.perf_counter() - start > self._budget:
                self.inline = False
                self._window = None
            return result
        loop = asyncio.get_running_loop()
        if self._window is None:
            return await loop.run_in_executor(self.pool, self._call, args)
        result, took = await loop.run_in_executor(self.pool, self._timed, args)
        window = self._window
        if window is not None:  # another call may have settled it while this one ran
            window[0] += 1
            window[1] += took * 2 <= self._budget
            if window[0] >= PROMOTE_AFTER:
                self.inline = window[1] >= PROMOTE_SHARE * PROMOTE_AFTER
                self._window = None if self.inline else [0, 0]
        return result

    def _call(self, args: Sequence[Any]) -> Any:
        return self.func(*args)

    def _timed(self, args: Sequence[Any]) -> tuple[Any, float]:
        start = time.perf_counter()
        result = self.func(*args)
        return result, time.perf_counter() - start


def make_pool(max_workers: int | None) -> ThreadPoolExecutor:
    """The server's one thread pool for sync model code (bounded: ``--max-threads``)."""
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="blazerpc-model")
