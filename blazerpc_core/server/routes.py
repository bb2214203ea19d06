"""The routes of the inference service: one per rpc of the current schema, rebuilt on every model change.

A :class:`Route` binds an rpc to the model entry serving it, composes the middleware
chain once around the terminal step of its shape (the runner's ``submit`` or ``stream``)
and picks the handler (:func:`~blazerpc_core.server.calls.unary` or a streaming one).
grpclib looks a route up once per call, so a call that started on a route finishes on
it, while new calls take the routes of the new schema.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpclib.const
from grpclib.const import Status
from grpclib.server import Stream

from blazerpc_core.call import CallNext, Middleware, compose
from blazerpc_core.errors import BlazeError
from blazerpc_core.method import CompiledMethod
from blazerpc_core.server import streaming
from blazerpc_core.server.calls import Call, CallSteps, raise_refused, raise_unread, submit, unary
from blazerpc_core.server.host import ModelEntry, ModelHost
from blazerpc_core.server.status import cap_message
from blazerpc_core.spec import Streaming

_CARDINALITY = {
    Streaming.UNARY: grpclib.const.Cardinality.UNARY_UNARY,
    Streaming.SERVER: grpclib.const.Cardinality.UNARY_STREAM,
    Streaming.CLIENT: grpclib.const.Cardinality.STREAM_UNARY,
    Streaming.BIDI: grpclib.const.Cardinality.STREAM_STREAM,
}
Handler = Callable[["Route", Stream[Any, Any], Call], Any]
#: Per shape: the terminal step of the middleware chain, and the handler of the call.
_SHAPES: dict[Streaming, tuple[CallNext, Handler]] = {
    Streaming.UNARY: (submit, unary),
    Streaming.SERVER: (streaming.open_results, streaming.server_stream),
    Streaming.CLIENT: (streaming.submit_stream, streaming.client_stream),
    Streaming.BIDI: (streaming.open_results, streaming.client_stream),
}


class Route:
    """One rpc of the current schema, bound to the entry serving it; see the module docstring."""

    def __init__(
        self, method: CompiledMethod, entry: ModelEntry, steps: CallSteps, middleware: Sequence[Middleware]
    ) -> None:
        self.method = method
        self.entry = entry
        self.steps = steps
        shape = method.spec.streaming
        terminal, handler = _SHAPES[shape]
        self.call = compose(middleware, terminal)
        self.call_unread = compose(middleware, raise_unread)
        self.call_refused = compose(middleware, raise_refused)
        self.handler = grpclib.const.Handler(
            self._handle(handler), _CARDINALITY[shape], method.request_type, method.response_type
        )

    def _handle(self, handler: Handler) -> Callable[[Stream[Any, Any]], Any]:
        async def handle(stream: Stream[Any, Any]) -> None:
            if not self.steps.gate.open:
                return await self.steps.refuse(self, stream)
            ctx = self.begin(stream)
            try:
                await handler(self, stream, ctx)
            finally:
                self.end(ctx)

        return handle

    def begin(self, stream: Stream[Any, Any]) -> Call:
        """Admit a call against its model entry; pair with :meth:`end`.

        A call whose entry cannot be had (the model was unloaded meanwhile) is still
        admitted, with the reason in ``ctx.unread``, so the chain answers and counts it.
        """
        self.steps.gate.enter()
        unread = None
        try:
            entry = self.steps.entry_for(self)
        except BlazeError as exc:
            entry, unread = self.entry, exc
        ctx = Call(self.method, stream, entry)
        ctx.unread = unread
        entry.enter()
        return ctx

    def end(self, ctx: Call) -> None:
        ctx.entry.exit(ctx.status == "OK")
        self.steps.gate.exit()


def routes_for(
    methods: Sequence[CompiledMethod], host: ModelHost, steps: CallSteps, middleware: Sequence[Middleware]
) -> dict[str, Route]:
    """A route per rpc of a schema, by method path."""
    routes = {}
    for method in methods:
        entry = host.entries[(method.spec.name, method.spec.version)]
        routes[method.path] = Route(method, entry, steps, middleware)
    return routes


def gone_handler(method: CompiledMethod, entry: ModelEntry) -> grpclib.const.Handler:
    """What an rpc answers once its model is no longer served: NOT_FOUND naming the model and why."""
    why = f"model {entry.label} " + (f"failed to load ({entry.error})" if entry.error else "was unloaded")
    message = cap_message(f"{why}; {method.rpc} is not served")

    async def handle(stream: Stream[Any, Any]) -> None:
        await stream.send_trailing_metadata(status=Status.NOT_FOUND, status_message=message)

    cardinality = _CARDINALITY[method.spec.streaming]
    return grpclib.const.Handler(handle, cardinality, method.request_type, method.response_type)
