"""Calls into served models that arrive through a plugin's own service (another protocol), not an rpc of ours.

The Open Inference Protocol plugin, for one, decodes its messages into a model's Python
arguments and hands them here: the call then takes the same gate, middleware chain,
runner and counters as a native call, so limits, auth, metrics and batching apply alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from blazerpc_core.call import CallContext, compose
from blazerpc_core.errors import BlazeError, Unavailable
from blazerpc_core.server.calls import REFUSED, CallSteps, submit
from blazerpc_core.server.host import ModelEntry
from blazerpc_core.server.status import cap_message, cut_short_status
from blazerpc_core.server.streaming import open_results

log = logging.getLogger("blazerpc.server")


class ForeignCall(CallContext):
    """A call that came through another protocol's service (the Open Inference Protocol), not an rpc of ours."""

    __slots__ = ("entry", "unread")

    def __init__(
        self, *, entry: ModelEntry, rpc: str, path: str, metadata: Any, peer: str | None, deadline: Any
    ) -> None:
        super().__init__(model=entry.spec, rpc=rpc, path=path, metadata=metadata, peer=peer, deadline=deadline)
        self.entry = entry
        self.unread: BlazeError | None = None


class ModelCalls:
    """Calls into served models for plugin services, through the same gate, middleware chain, runner and counters.

    A protocol plugin decodes its own messages into the model's Python arguments, then
    ``await calls.call(entry, args, ...)``; failures raise a :class:`BlazeError` (or
    ``GRPCError``) carrying the status a native call would get, already counted and logged.
    """

    def __init__(self, steps: CallSteps, middleware: Sequence[Any]) -> None:
        self._steps = steps
        self._submit = compose(middleware, submit)
        self._open = compose(middleware, open_results)

    def entry(self, name: str, version: str | None = None) -> ModelEntry:
        """The entry serving ``name`` (its default version when ``version`` is empty); NOT_FOUND naming it otherwise."""
        entry = self._steps.host.entry(name, version or None)
        if entry is None:
            what = f"model {name!r}" + (f" version {version!r}" if version else "")
            raise BlazeError(f"{what} is not served", status=Status.NOT_FOUND)
        return entry

    async def call(self, entry: ModelEntry, args: Sequence[Any], *, rpc: str, path: str, metadata: Any,
                   peer: str | None = None, deadline: Any = None) -> Any:
        """The model's result for one request (a unary or client-streaming call of ``entry``)."""
        ctx, ok = self._begin(entry, args, rpc, path, metadata, peer, deadline), False
        try:
            result = await self._submit(ctx)
            ok = True
            ctx.finish("OK", None)
            return result
        except BaseException as exc:
            raise self._failed(ctx, exc) from None
        finally:
            self._end(ctx, ok)

    async def stream(self, entry: ModelEntry, args: Sequence[Any], *, rpc: str, path: str, metadata: Any,
                     peer: str | None = None, deadline: Any = None) -> AsyncIterator[Any]:
        """The model's results, as an async generator, for a server-streaming model."""
        ctx, ok = self._begin(entry, args, rpc, path, metadata, peer, deadline), False
        try:
            results = await self._open(ctx)
            try:
                async for item in results:
                    yield item
            finally:
                close = getattr(results, "aclose", None)
                if close is not None:
                    await close()
            ok = True
            ctx.finish("OK", None)
        except BaseException as exc:
            raise self._failed(ctx, exc) from None
        finally:
            self._end(ctx, ok)

    def _begin(self, entry: ModelEntry, args: Sequence[Any], rpc: str, path: str, metadata: Any,
               peer: str | None, deadline: Any) -> ForeignCall:
        gate = self._steps.gate
        if not gate.open:
            raise Unavailable(REFUSED)
        gate.enter()
        entry.enter()
        ctx = ForeignCall(entry=entry, rpc=rpc, path=path, metadata=metadata, peer=peer, deadline=deadline)
        ctx.args = args
        return ctx

    def _end(self, ctx: ForeignCall, ok: bool) -> None:
        ctx.entry.exit(ok)
        self._steps.gate.exit()

    def _failed(self, ctx: ForeignCall, exc: BaseException) -> BaseException:
        if isinstance(exc, (asyncio.CancelledError, StreamTerminatedError)):
            ctx.finish(cut_short_status(ctx.time_remaining()).name, None)
            return exc
        if isinstance(exc, GRPCError):
            ctx.finish(exc.status.name, exc.message)
            return exc
        if not isinstance(exc, Exception):
            return exc
        status, message = self._steps.errors.map(exc, ctx.model.label)
        if status is Status.INTERNAL and not isinstance(exc, BlazeError):
            log.error("model %s failed", ctx.model.label, exc_info=exc, extra={"blazerpc": {
                "method": ctx.path, "model": ctx.model.name, "version": ctx.model.version, "request_id": ctx.request_id,
            }})
        message = cap_message(message)
        ctx.finish(status.name, message)
        return BlazeError(message, status=status)
