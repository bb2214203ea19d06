"""Server-, client- and bidirectional-streaming calls of one rpc.

Where a stream's items go, and what holds them back:

* Responses: the model's (async) iterator → encode → send, one message per item. Results
  of a sync generator that are already computed go out together in one write. Sending
  waits for HTTP/2 flow control, so a slow client stops the send loop, the send loop
  stops pulling, and a sync generator stops a bounded number of items later.
* Requests: ``recv_message`` → decode → the model's iterator parameter, one item per
  message. A model that does not read holds the client back the same way.

However a call ends (the stream ran out, the model raised, the client cancelled, its
deadline passed, the server shut down), the model's iterators are closed before the call
finishes, so ``finally`` blocks in user code run and a sync generator computes nothing
more. Middleware sees the call once, when it starts; ``ctx.finish`` runs with the final
status when the stream ends.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from grpclib.const import Status
from grpclib.server import Stream

from blazerpc_core.errors import BlazeError, Cancelled, DeadlineExceeded
from blazerpc_core.middleware import CallContext, CallNext
from blazerpc_core.registry import Streaming
from blazerpc_core.runtime.streams import LoopIterator, ThreadedIterator
from blazerpc_core.server.status import cut_short_status

if TYPE_CHECKING:
    from blazerpc_core.server.inference import MethodHandler

log = logging.getLogger("blazerpc.server")

#: At most this many ready results (and about this many bytes) go out in one write.
COALESCE_ITEMS = 64
COALESCE_BYTES = 64 * 1024
#: The gRPC message prefix: compressed flag, big-endian length.
_PREFIX = struct.Struct(">?I")


class StreamingCalls:
    """The grpclib handler and the middleware terminal for one streaming rpc."""

    def __init__(self, handler: MethodHandler, pool: Executor) -> None:
        self._h = handler
        self._pool = pool
        self._spec = handler.method.spec
        shape = self._spec.streaming
        if shape is Streaming.UNARY:
            raise ValueError(f"rpc {handler.method.rpc} is unary")
        #: Innermost step of the middleware chain: opens the model's stream of results
        #: (server and bidi streaming) or returns its one result (client streaming).
        self.terminal: CallNext = self._open_results if shape.server_streams else self._run_to_result
        self.handle: Callable[[Stream[Any, Any]], Any] = (
            self._server_stream if shape is Streaming.SERVER else self._client_stream
        )

    # -- terminals --------------------------------------------------------------------------

    async def _open_results(self, ctx: CallContext) -> AsyncIterator[Any]:
        spec = self._spec
        args = ctx.args  # type: ignore[attr-defined]
        if not spec.is_async:
            # Even creating the iterator may be model work, so it happens in the pool too.
            make = functools.partial(self._sync_results, args)
            return ThreadedIterator(make, self._pool)
        results = spec.func(*args)
        if inspect.isawaitable(results):
            results = await results
        if hasattr(results, "__aiter__"):
            return results  # type: ignore[no-any-return]
        self._check_iterable(results)
        return ThreadedIterator(lambda: results, self._pool)

    def _sync_results(self, args: Any) -> Iterable[Any]:
        results = self._spec.func(*args)
        self._check_iterable(results)
        return results  # type: ignore[no-any-return]

    def _check_iterable(self, results: Any) -> None:
        if not isinstance(results, Iterable) or isinstance(results, (str, bytes)):
            raise BlazeError(
                f"model {self._h._label} streams its results, so it must return an iterator, "
                f"not {type(results).__name__}"
            )

    async def _run_to_result(self, ctx: CallContext) -> Any:
        (items,) = ctx.args  # type: ignore[attr-defined]
        if self._spec.is_async:
            return await self._spec.func(items)
        future = self._pool.submit(self._spec.func, items)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # The thread may be blocked waiting for the next request: wake it with the
            # reason, and let its finally blocks run before the call counts as over.
            await items.aclose(_gone(ctx))
            await _despite_cancellation(asyncio.wrap_future(future))
            raise

    # -- handlers ---------------------------------------------------------------------------

    async def _server_stream(self, stream: Stream[Any, Any]) -> None:
        h = self._h
        if not h._admit():
            return await h._refuse(stream)
        ctx = h._new_call(stream)
        try:
            args = await h._read_request(stream, ctx)
            ctx.inputs = dict(zip(h.method.inputs.names, args, strict=True))
            await self._send_results(stream, ctx, None, None)
        except BaseException as exc:
            await h._fail(stream, ctx, exc)
        finally:
            h._gate.exit()

    async def _client_stream(self, stream: Stream[Any, Any]) -> None:
        h = self._h
        if not h._admit():
            return await h._refuse(stream)
        ctx = h._new_call(stream)
        requests = RequestStream(stream, h, ctx)
        items = requests if self._spec.is_async else LoopIterator(requests)
        ctx.args = [items]
        try:
            if self._spec.streaming is Streaming.BIDI:
                await self._send_results(stream, ctx, requests, items)
            else:
                try:
                    result = await h._call(ctx)
                finally:
                    await _close_requests(items, ctx)
                requests.check()
                await stream.send_message(h._encode(result))
                ctx.messages_out += 1
                await stream.send_trailing_metadata(metadata=ctx.trailers())
                ctx.finish("OK", None)
        except BaseException as exc:
            # A bad request message is the cause even when the model caught it and failed later.
            if requests.error is not None and isinstance(exc, Exception):
                exc = requests.error
            await h._fail(stream, ctx, exc)
        finally:
            h._gate.exit()

    async def _send_results(
        self, stream: Stream[Any, Any], ctx: CallContext, requests: RequestStream | None, items: Any
    ) -> None:
        """Send every result of the model's stream, then OK; close everything on the way out."""
        h = self._h
        results = None
        try:
            results = await h._call(ctx)
            if not hasattr(results, "__aiter__"):
                raise BlazeError(f"the middleware of {h.method.rpc} did not pass the model's stream on")
            threaded = isinstance(results, ThreadedIterator)
            async for result in results:
                if threaded:
                    await self._send_ready(stream, ctx, [result, *results.ready(COALESCE_ITEMS, COALESCE_BYTES)])
                else:
                    await stream.send_message(h._encode(result))
                    ctx.messages_out += 1
        finally:
            # A sync bidi model may be blocked waiting for a request: wake it first, or
            # closing its results would wait for it forever.
            await _close_requests(items, ctx)
            if results is not None:
                await _close_results(results)
        if requests is not None:
            requests.check()
        await stream.send_trailing_metadata(metadata=ctx.trailers())
        ctx.finish("OK", None)


    async def _send_ready(self, stream: Stream[Any, Any], ctx: CallContext, results: list[Any]) -> None:
        """Send results that were all computed already, in one write when there are several.

        One write per message is what a sender pays most for (a syscall, HTTP/2 framing
        and the GIL handed to pool threads on every send); items still leave as soon as
        they exist, since nothing waits to fill a batch. A result that does not fit its
        declared output fails the call after the ones before it were sent.
        """
        messages = []
        error: BlazeError | None = None
        for result in results:
            try:
                messages.append(self._h._encode(result))
            except BlazeError as exc:
                error = exc
                break
        if len(messages) == 1:
            await stream.send_message(messages[0])
        elif messages:
            await _send_messages(stream, messages)
        ctx.messages_out += len(messages)
        if error is not None:
            raise error


class RequestStream:
    """The client's request messages as decoded items: what a client-streaming model iterates.

    A message that cannot be read (undecodable, oversize, wrong shape...) raises its error
    in the model, prefixed with the message's position, and ends the stream; it is
    remembered so that the call fails with it even if the model catches it (``check``).
    """

    def __init__(self, stream: Stream[Any, Any], handler: MethodHandler, ctx: CallContext) -> None:
        self._stream = stream
        self._h = handler
        self._ctx = ctx
        self.done = False
        self.error: BlazeError | None = None

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> Any:
        if self.done:
            raise StopAsyncIteration
        ctx = self._ctx
        try:
            message = await self._h._receive(self._stream)
        except BlazeError as exc:
            ctx.messages_in += 1
            raise self._bad(exc) from None
        if message is None:
            self.done = True
            raise StopAsyncIteration
        ctx.messages_in += 1
        try:
            (item,) = self._h.method.inputs.decode(message)
        except BlazeError as exc:
            raise self._bad(exc) from None
        return item

    def _bad(self, exc: BlazeError) -> BlazeError:
        self.done = True
        self.error = BlazeError(f"request message {self._ctx.messages_in}: {exc.message}", status=exc.status)
        return self.error

    def check(self) -> None:
        """Raise the bad-message error, if the model swallowed one."""
        if self.error is not None:
            raise self.error


async def _send_messages(stream: Stream[Any, Any], messages: list[Any]) -> None:
    """grpclib's ``Stream.send_message`` for several messages in one DATA write.

    Mirrors grpclib 0.4.9 ``server.Stream.send_message`` (events, counters) and
    ``stream.send_message`` (the 5-byte gRPC prefix); gRPC lets one DATA frame carry
    several messages.
    """
    if not stream._send_initial_metadata_done:
        await stream.send_initial_metadata()
    chunks = []
    for message in messages:
        (message,) = await stream._dispatch.send_message(message)
        body = stream._codec.encode(message, stream._send_type)
        chunks.append(_PREFIX.pack(False, len(body)))
        chunks.append(body)
    await stream._stream.send_data(b"".join(chunks))
    stream._send_message_done = True
    stream._messages_sent += len(messages)
    connection = stream._stream.connection
    connection.messages_sent += len(messages)
    connection.last_message_sent = time.monotonic()


def _gone(ctx: CallContext, why: str = "the client cancelled the call") -> BlazeError:
    """Why a call stopped early, as raised in a model thread still reading requests."""
    if cut_short_status(ctx.time_remaining()) is Status.DEADLINE_EXCEEDED:
        return DeadlineExceeded("the call's deadline passed")
    return Cancelled(why)


async def _close_requests(items: Any, ctx: CallContext) -> None:
    if isinstance(items, LoopIterator):
        await items.aclose(_gone(ctx, "the call ended before the model read all of its requests"))
    elif isinstance(items, RequestStream):
        items.done = True


async def _close_results(results: Any) -> None:
    if isinstance(results, ThreadedIterator):
        # Sync model code cannot be interrupted; its finally blocks run before the call is
        # over (and before a shutting-down server closes its thread pool).
        await _despite_cancellation(results.aclose())
        return
    close = getattr(results, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception:  # the call is ending anyway; its status must not change now
        log.warning("closing a model's stream raised", exc_info=True)


async def _despite_cancellation(awaitable: Awaitable[Any]) -> None:
    """Wait for ``awaitable`` to finish even if this task is cancelled again meanwhile.

    Used only for work bounded by one step of model code already running in a thread.
    The outcome is ignored; a cancellation that arrived meanwhile is raised afterwards.
    """
    task = asyncio.ensure_future(awaitable)
    interrupted = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            interrupted = True
        except Exception:  # the caller is already dealing with the call's end
            break
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not report it as lost
    if interrupted:
        raise asyncio.CancelledError
