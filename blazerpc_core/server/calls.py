"""The request path of every inference call: admit → read and decode → middleware → runner → encode → send.

:class:`CallSteps` holds the steps every call shares (admission, reading a request,
building a response, answering a failure); one instance serves the whole server. Unary
calls are handled here (:func:`unary`), streaming ones in
:mod:`blazerpc_core.server.streaming`, both with the same steps, as peers; a route
(:mod:`blazerpc_core.server.routes`) picks the handler of its rpc's shape. Every failure
becomes a status with a message; nothing a client sends can take the server down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.server import Stream

from blazerpc_core.call import CallContext, CallNext
from blazerpc_core.errors import BlazeError, InvalidArgument, Unavailable
from blazerpc_core.method import CompiledMethod
from blazerpc_core.server.gate import Gate
from blazerpc_core.server.host import ModelEntry, ModelHost
from blazerpc_core.server.status import ErrorMapper, cap_message, cut_short_status, public_text
from blazerpc_core.server.wire.messages import receive_message, send_message

log = logging.getLogger("blazerpc.server")

REFUSED = "server is not accepting calls (starting or draining)"


class Call(CallContext):
    """The context of a call arriving on a grpclib stream, admitted against one model entry."""

    __slots__ = ("_stream", "entry", "unread")

    def __init__(self, method: CompiledMethod, stream: Stream[Any, Any], entry: ModelEntry) -> None:
        super().__init__(
            model=method.spec, rpc=method.rpc, path=method.path, metadata=stream.metadata,
            peer=None, deadline=stream.deadline,
        )
        self._stream = stream
        self.entry = entry
        #: The error of a request that could not be read, raised by the chain's terminal.
        self.unread: BlazeError | None = None

    @property
    def peer(self) -> str | None:
        """Read from the connection only when someone asks (most calls never do)."""
        addr = self._stream.peer.addr()
        return None if addr is None else f"{addr[0]}:{addr[1]}"


class RouteView(Protocol):
    """What the call steps use of a route (see :class:`blazerpc_core.server.routes.Route`)."""

    method: CompiledMethod
    entry: ModelEntry
    steps: CallSteps
    call: CallNext
    call_unread: CallNext
    call_refused: CallNext


class CallSteps:
    """The steps every call shares; one per server (see the module docstring)."""

    def __init__(self, *, gate: Gate, errors: ErrorMapper, host: ModelHost, max_message_bytes: int) -> None:
        self.gate = gate
        self.errors = errors
        self.host = host
        self.max_message_bytes = max_message_bytes

    def entry_for(self, route: RouteView) -> ModelEntry:
        """The entry a new call runs on: the route's, or, if that one was retired meanwhile, its successor."""
        entry = route.entry
        if not entry.retired:
            return entry
        current = self.host.entries.get(entry.key)
        if current is None:
            raise BlazeError(f"model {entry.label} is not served", status=Status.NOT_FOUND)
        if current.model.inputs.names != entry.model.inputs.names:
            raise Unavailable(f"model {entry.label} was just reloaded with new inputs; retry")
        return current

    async def read_request(self, route: RouteView, stream: Stream[Any, Any], ctx: Call) -> Sequence[Any]:
        """Receive and decode the one request of a unary or server-streaming call.

        A request that cannot be read still runs the middleware chain (auth answers first;
        logs and metrics count it), whose terminal then raises the error it carries.
        """
        try:
            request = await self.receive(route, stream, first=True)
            if request is None:
                raise InvalidArgument(f"{route.method.rpc} needs a request message; the client sent none")
            ctx.messages_in += 1
            ctx.args = args = route.method.inputs.decode(request)
        except BlazeError as exc:
            ctx.unread = exc
            await route.call_unread(ctx)
            raise
        ctx.input_names = route.method.inputs.names
        return args

    async def receive(self, route: RouteView, stream: Stream[Any, Any], *, first: bool = False) -> Any:
        """The next request message (None after the last); ``first``: the one request of the call, timed."""
        try:
            return await receive_message(
                stream, rpc=route.method.rpc, max_message_bytes=self.max_message_bytes, first=first
            )
        except (GRPCError, StreamTerminatedError, asyncio.CancelledError, BlazeError):
            raise
        except Exception as exc:
            raise InvalidArgument(f"request to {route.method.rpc} could not be decoded: {public_text(exc)}") from exc

    def response(self, route: RouteView, result: Any) -> Any:
        """The response message for one result; a result that does not fit is the model's fault (INTERNAL)."""
        try:
            return route.method.response(result)
        except Exception as exc:
            reason = exc.message if isinstance(exc, BlazeError) else f"{type(exc).__name__}: {public_text(exc)}"
            raise BlazeError(
                f"model {route.entry.label} returned a value that does not fit its declared output: {reason}"
            ) from exc

    async def refuse(self, route: RouteView, stream: Stream[Any, Any]) -> None:
        """Answer a call the server does not accept now (starting or draining); logged and counted as any other."""
        ctx = Call(route.method, stream, route.entry)
        try:
            await route.call_refused(ctx)
        except BaseException as exc:
            await self.fail(stream, ctx, exc)

    async def fail(self, stream: Stream[Any, Any], ctx: CallContext, exc: BaseException) -> None:
        """Send the status an exception means, record it on ``ctx``; cancellations propagate."""
        if isinstance(exc, (asyncio.CancelledError, StreamTerminatedError)):
            ctx.finish(cut_short_status(ctx.time_remaining()).name, None)
            raise exc
        if isinstance(exc, GRPCError):
            status, message = exc.status, exc.message or ""
        elif isinstance(exc, Exception):
            status, message = self.errors.map(exc, ctx.model.label)
            if status is Status.INTERNAL:
                log.error("model %s failed", ctx.model.label, exc_info=exc, extra={"blazerpc": {
                    "method": ctx.path, "model": ctx.model.name, "version": ctx.model.version,
                    "request_id": ctx.request_id,
                }})
        else:
            raise exc
        message = cap_message(message)
        try:
            await stream.send_trailing_metadata(status=status, status_message=message, metadata=ctx.trailers())
        except Exception:  # the client may be gone; nothing left to tell it
            log.debug("could not send status to %s", ctx.peer)
        finally:
            # After the status is out, as for answered calls: on_done work never delays it.
            ctx.finish(status.name, message)


async def unary(route: RouteView, stream: Stream[Any, Any], ctx: Call) -> None:
    """A unary call: one request, the chain, one response."""
    steps = route.steps
    try:
        if ctx.unread is not None:
            await route.call_unread(ctx)
        await steps.read_request(route, stream, ctx)
        result = await route.call(ctx)
        await send_message(stream, steps.response(route, result))
        ctx.messages_out += 1
        await stream.send_trailing_metadata(metadata=ctx.trailers())
        ctx.finish("OK", None)
    except BaseException as exc:
        await steps.fail(stream, ctx, exc)


async def submit(ctx: CallContext) -> Any:
    """Innermost step of a unary call's chain: the model entry's runner (native and foreign calls alike)."""
    entry = ctx.entry  # type: ignore[attr-defined]
    runner = entry.runner
    if runner is None:
        raise Unavailable(f"model {entry.label} is not ready")
    return await runner.submit(ctx.args, ctx)


async def raise_unread(ctx: CallContext) -> Any:
    assert isinstance(ctx, Call) and ctx.unread is not None
    # Taken off the context: the error's traceback will hold frames that hold the context,
    # and a cycle would keep the request until the garbage collector runs.
    error, ctx.unread = ctx.unread, None
    try:
        raise error
    finally:
        del error


async def raise_refused(ctx: CallContext) -> Any:
    raise Unavailable(REFUSED)
