"""The runner of models that are not batched: one model call per request, as soon as it arrives.

Unary and client-streaming calls go through the invoker's guarded call (the model's
thread cap and deadline checks). A server or bidirectional stream is a generator: a sync
one is created and stepped in the model pool in bursts (see
:class:`~blazerpc_core.runtime.streams.ThreadedIterator`) through the invoker's
``enter``, or, for a server stream whose items the pool measured as cheap, on the loop
(:class:`~blazerpc_core.runtime.streams.InlineIterator`); an async one runs on the loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from blazerpc_core.errors import BlazeError
from blazerpc_core.runtime.executor import Inlining
from blazerpc_core.runtime.streams import InlineIterator, ThreadedIterator
from blazerpc_core.spec import Streaming

if TYPE_CHECKING:
    from blazerpc_core.call import CallContext
    from blazerpc_core.runtime.policy import ModelInvoker


class DirectRunner:
    """One function call per request; see the module docstring."""

    def __init__(self, invoker: ModelInvoker, shape: Streaming = Streaming.UNARY) -> None:
        self.invoker = invoker
        # A client stream's length is the client's to choose: the model's recent call
        # times say nothing about whether this one can finish in time.
        self._judge_deadline = not shape.client_streams
        #: Whether this (server-streaming, sync) model's generators are cheap enough to step on the
        #: loop; a bidi generator waits for the client's messages, which must never happen there.
        self.inlining = Inlining(invoker.inline_budget if shape is Streaming.SERVER else 0.0)

    async def submit(self, args: Sequence[Any], ctx: CallContext) -> Any:
        return await self.invoker(args, ctx.expires_at() if self._judge_deadline else None)

    async def stream(self, args: Sequence[Any], ctx: CallContext) -> AsyncIterator[Any]:
        invoker = self.invoker
        if not invoker.is_async:
            # Even creating the iterator may be model work, so it happens in the pool too
            # (or on the loop, once the model's items have proved cheap).
            def make() -> Iterable[Any]:
                return _checked(invoker.call_sync(invoker.func, *args), invoker.label)

            inlining = self.inlining
            measured = None if inlining.state == "off" else inlining.pooled

            def threaded(source: Callable[[], Iterable[Any]]) -> ThreadedIterator:
                return ThreadedIterator(source, invoker.pool, enter=invoker.enter, measured=measured)

            return InlineIterator(make, inlining, threaded) if inlining.state == "inline" else threaded(make)
        results = invoker.func(*args)
        if hasattr(results, "__await__"):
            results = await results
        if hasattr(results, "__aiter__"):
            return results  # type: ignore[no-any-return]
        results = _checked(results, invoker.label)
        return ThreadedIterator(lambda: results, invoker.pool, enter=invoker.enter)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def _checked(results: Any, label: str) -> Iterable[Any]:
    if not isinstance(results, Iterable) or isinstance(results, (str, bytes)):
        raise BlazeError(
            f"model {label} streams its results, so it must return an iterator, not {type(results).__name__}"
        )
    return results
