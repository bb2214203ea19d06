"""Server-, client- and bidirectional-streaming calls, with the shared steps of :mod:`blazerpc_core.server.calls`.

Where a stream's items go, and what holds them back:

* Responses: the runner's stream of results → encode → send, one message per item.
  Results of a sync generator that are already computed go out together in one write.
  Sending waits for HTTP/2 flow control, so a slow client stops the send loop, the send
  loop stops pulling, and a sync generator stops a bounded number of items later.
* Requests: receive → decode → the model's iterator parameter, one item per message. A
  model that does not read holds the client back the same way.

However a call ends (the stream ran out, the model raised, the client cancelled, its
deadline passed, the server shut down), the model's iterators are closed before the call
finishes, so ``finally`` blocks in user code run and a sync generator computes nothing
more. Middleware sees the call once, when it starts; ``ctx.finish`` runs with the final
status when the stream ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from grpclib.const import Status
from grpclib.server import Stream

from blazerpc_core.call import CallContext
from blazerpc_core.errors import BlazeError, Cancelled, DeadlineExceeded, Unavailable
from blazerpc_core.runtime.streams import InlineIterator, LoopIterator, ThreadedIterator
from blazerpc_core.server.status import cut_short_status
from blazerpc_core.server.wire.messages import send_message, send_messages
from blazerpc_core.spec import Streaming

if TYPE_CHECKING:
    from blazerpc_core.server.calls import Call
    from blazerpc_core.server.calls import RouteView as Route

log = logging.getLogger("blazerpc.server")

#: At most this many ready results (and about this many bytes) go out in one write.
COALESCE_ITEMS = 64
COALESCE_BYTES = 64 * 1024


# -- terminals of the middleware chain ------------------------------------------------------


async def open_results(ctx: CallContext) -> Any:
    """Server and bidi streaming: the runner's stream of the model's results."""
    runner = _runner(ctx)
    return await runner.stream(ctx.args, ctx)


async def submit_stream(ctx: CallContext) -> Any:
    """Client streaming: the model's one result; a model reading requests in a thread is woken when the call ends."""
    runner = _runner(ctx)
    (items,) = ctx.args
    task = asyncio.ensure_future(runner.submit(ctx.args, ctx))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if isinstance(items, LoopIterator):
            # The thread may be blocked waiting for the next request: wake it with the
            # reason, and let its finally blocks run before the call counts as over.
            await items.aclose(_gone(ctx))
        else:
            task.cancel()
        await _despite_cancellation(task)
        raise


def _runner(ctx: CallContext) -> Any:
    runner = ctx.entry.runner  # type: ignore[attr-defined]
    if runner is None:
        raise Unavailable(f"model {ctx.model.label} is not ready")
    return runner


# -- handlers -------------------------------------------------------------------------------


async def server_stream(route: Route, stream: Stream[Any, Any], ctx: Call) -> None:
    try:
        if ctx.unread is not None:
            await route.call_unread(ctx)
        await route.steps.read_request(route, stream, ctx)
        await _send_results(route, stream, ctx, None, None)
    except BaseException as exc:
        await route.steps.fail(stream, ctx, exc)


async def client_stream(route: Route, stream: Stream[Any, Any], ctx: Call) -> None:
    """Client and bidirectional streaming: the requests become the model's iterator parameter."""
    steps = route.steps
    requests = RequestStream(route, stream, ctx)
    items = requests if ctx.model.is_async else LoopIterator(requests)
    ctx.args = [items]
    try:
        if ctx.unread is not None:
            await route.call_unread(ctx)
        if ctx.model.streaming is Streaming.BIDI:
            await _send_results(route, stream, ctx, requests, items)
        else:
            try:
                result = await route.call(ctx)
            finally:
                await _close_requests(items, ctx)
            requests.check()
            await send_message(stream, steps.response(route, result))
            ctx.messages_out += 1
            await stream.send_trailing_metadata(metadata=ctx.trailers())
            ctx.finish("OK", None)
    except BaseException as exc:
        # A bad request message is the cause even when the model caught it and failed later.
        if requests.error is not None and isinstance(exc, Exception):
            exc = requests.error
        await steps.fail(stream, ctx, exc)


async def _send_results(
    route: Route, stream: Stream[Any, Any], ctx: Call, requests: RequestStream | None, items: Any
) -> None:
    """Send every result of the model's stream, then OK; close everything on the way out."""
    results = None
    try:
        results = await route.call(ctx)
        if not hasattr(results, "__aiter__"):
            raise BlazeError(f"the middleware of {route.method.rpc} did not pass the model's stream on")
        in_writes = isinstance(results, (ThreadedIterator, InlineIterator))  # items computed ahead: batch them
        async for result in results:
            if in_writes:
                await _send_ready(route, stream, ctx, [result, *results.ready(COALESCE_ITEMS, COALESCE_BYTES)])
            else:
                await send_message(stream, route.steps.response(route, result))
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


async def _send_ready(route: Route, stream: Stream[Any, Any], ctx: Call, results: list[Any]) -> None:
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
            messages.append(route.steps.response(route, result))
        except BlazeError as exc:
            error = exc
            break
    if len(messages) == 1:
        await send_message(stream, messages[0])
    elif messages:
        await send_messages(stream, messages)
    ctx.messages_out += len(messages)
    if error is not None:
        raise error


class RequestStream:
    """The client's request messages as decoded items: what a client-streaming model iterates.

    A message that cannot be read (undecodable, oversize, wrong shape...) raises its error
    in the model, prefixed with the message's position, and ends the stream; it is
    remembered so that the call fails with it even if the model catches it (``check``).
    """

    def __init__(self, route: Route, stream: Stream[Any, Any], ctx: CallContext) -> None:
        self._route = route
        self._stream = stream
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
            message = await self._route.steps.receive(self._route, self._stream)
        except BlazeError as exc:
            ctx.messages_in += 1
            raise self._bad(exc) from None
        if message is None:
            self.done = True
            raise StopAsyncIteration
        ctx.messages_in += 1
        try:
            (item,) = self._route.method.inputs.decode(message)
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
    if isinstance(results, (ThreadedIterator, InlineIterator)):
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
