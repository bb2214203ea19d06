"""``Client``: the blocking face of :class:`~blazerpc_core.client.aio.AsyncClient`.

It runs an ``AsyncClient`` on an event loop in a private thread and hands each call to
it, so it works from code with no event loop, and from several threads at once: calls
from different threads share the connections and run concurrently on that loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from blazerpc_core.client.aio import AsyncClient, merge_inputs
from blazerpc_core.client.schema import ModelInfo

T = TypeVar("T")
_END = object()


class _PulledInThread:
    """A caller's (sync) request iterator, pulled in a worker thread so it may block without stalling the loop.

    A bidirectional caller may well write its requests from a generator that waits for
    the replies it is reading; pulled on the loop, that would wait forever.
    """

    def __init__(self, items: Iterator[Any]) -> None:
        self._items = items

    def __aiter__(self) -> _PulledInThread:
        return self

    async def __anext__(self) -> Any:
        item = await asyncio.get_running_loop().run_in_executor(None, next, self._items, _END)
        if item is _END:
            raise StopAsyncIteration
        return item


def _stop(
    loop: asyncio.AbstractEventLoop, thread: threading.Thread, executor: concurrent.futures.ThreadPoolExecutor
) -> None:
    if loop.is_running():
        loop.call_soon_threadsafe(loop.stop)
    if thread is not threading.current_thread():
        thread.join(10)
    if not loop.is_running() and not loop.is_closed():
        loop.close()
    # A request iterator still blocked in a worker thread must not hold up the interpreter's exit.
    executor.shutdown(wait=False, cancel_futures=True)


class Client:
    """Calls the models of one or more blazerpc servers, blocking; options as for :class:`AsyncClient`.

    >>> with Client("127.0.0.1:50051", timeout=5.0) as client:  # doctest: +SKIP
    ...     client.call("add", a=0.1, b=0.2)
    0.30000000000000004
    """

    def __init__(self, addresses: str | Sequence[str], **options: Any) -> None:
        self._async = AsyncClient(addresses, **options)
        self._loop = asyncio.new_event_loop()
        # Request iterators are pulled in these threads; each blocking bidirectional caller holds one.
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="blazerpc-client-requests")
        self._loop.set_default_executor(executor)
        self._thread = threading.Thread(target=self._loop.run_forever, name="blazerpc-client", daemon=True)
        self._thread.start()
        self._closed = False
        self._finalizer = weakref.finalize(self, _stop, self._loop, self._thread, executor)

    @property
    def addresses(self) -> list[str]:
        return self._async.addresses

    @property
    def timeout(self) -> float:
        return self._async.timeout

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close connections and stop the private loop thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._async.close())
        finally:
            self._finalizer()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a Client cannot be called from its own loop thread; use AsyncClient there")
        if self._loop.is_closed():
            coroutine.close()
            raise RuntimeError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise
        except BaseException:
            # KeyboardInterrupt and the like: do not leave the call running behind the caller's back.
            if not future.done():
                future.cancel()
            raise

    def _prepare(self, model: str, version: str | int | None, values: dict[str, Any]) -> dict[str, Any]:
        """Hand a streamed input given as a plain iterator to a worker thread (see :class:`_PulledInThread`)."""
        if not any(isinstance(v, Iterator) for v in values.values()):
            return values
        method = self._run(self._async.method(model, version))
        field = method.stream_field
        if field is not None and isinstance(values.get(field), Iterator):
            values = {**values, field: _PulledInThread(values[field])}
        return values

    def models(self, *, refresh: bool = False) -> list[ModelInfo]:
        """Every rpc of the server's inference service (see :meth:`AsyncClient.models`)."""
        return self._run(self._async.models(refresh=refresh))

    def call(
        self,
        model: str,
        inputs: Mapping[str, Any] | None = None,
        /,
        *,
        version: str | int | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call a unary or client-streaming model and return its result (see :meth:`AsyncClient.call`)."""
        values = self._prepare(model, version, merge_inputs(inputs, kwargs))
        return self._run(self._async.call(model, values, version=version, timeout=timeout, metadata=metadata))

    def stream(
        self,
        model: str,
        inputs: Mapping[str, Any] | None = None,
        /,
        *,
        version: str | int | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Iterator[Any]:
        """Results of a server-streaming or bidirectional model, as they arrive; closing the iterator cancels."""
        values = self._prepare(model, version, merge_inputs(inputs, kwargs))
        replies = self._async.stream(model, values, version=version, timeout=timeout, metadata=metadata)
        finished = False
        try:
            while True:
                try:
                    item = self._run(replies.__anext__())
                except StopAsyncIteration:
                    finished = True
                    return
                yield item
        finally:
            if not finished and not self._loop.is_closed():
                # Left early (or collected): cancel the call on the loop, from whichever thread we are on.
                if threading.current_thread() is self._thread:
                    self._loop.create_task(replies.aclose())
                else:
                    self._run(replies.aclose())

    def health(self, service: str = "", *, address: str | None = None, timeout: float | None = None) -> str:
        """The health status of ``service`` on one address (see :meth:`AsyncClient.health`)."""
        return self._run(self._async.health(service, address=address, timeout=timeout))
