"""Calling a model function without blocking the event loop.

Sync functions run in one bounded thread pool shared by the server; async functions run
on the loop. ``Invoker`` hides which.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class Invoker:
    """``await invoker(args)`` calls ``func(*args)`` the right way for its kind."""

    def __init__(self, func: Callable[..., Any], *, is_async: bool, pool: ThreadPoolExecutor) -> None:
        self.func = func
        self.is_async = is_async
        self.pool = pool

    async def __call__(self, args: Sequence[Any]) -> Any:
        if self.is_async:
            return await self.func(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(self.func, *args))


def make_pool(max_workers: int | None) -> ThreadPoolExecutor:
    """The server's one thread pool for sync model code (bounded: ``--max-threads``)."""
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="blazerpc-model")
