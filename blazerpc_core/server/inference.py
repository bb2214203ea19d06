"""``blazerpc.InferenceService``: grpclib handlers built from the schema, one per rpc.

Request path: admission (draining?) → receive and decode → middleware chain → runner
(batcher or direct call) → encode → send. Every failure becomes a status with a message;
nothing a client sends can take the server down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import grpclib.const
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.server import Stream

from blazerpc_core.errors import BlazeError, InvalidArgument, ResourceExhausted
from blazerpc_core.middleware import CallContext, CallNext, Middleware, compose
from blazerpc_core.registry import Streaming
from blazerpc_core.runtime.policy import Runner
from blazerpc_core.schema.builder import MethodSchema
from blazerpc_core.server.gate import Gate
from blazerpc_core.server.status import ErrorMapper, cap_message, cut_short_status, public_text
from blazerpc_core.server.streaming import StreamingCalls

log = logging.getLogger("blazerpc.server")
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_CARDINALITY = {
    Streaming.UNARY: grpclib.const.Cardinality.UNARY_UNARY,
    Streaming.SERVER: grpclib.const.Cardinality.UNARY_STREAM,
    Streaming.CLIENT: grpclib.const.Cardinality.STREAM_UNARY,
    Streaming.BIDI: grpclib.const.Cardinality.STREAM_STREAM,
}


class Call(CallContext):
    """The call context plus what the terminal step needs (the decoded arguments)."""

    __slots__ = ("_stream", "args")

    def __init__(self, method: MethodSchema, stream: Stream[Any, Any]) -> None:
        super().__init__(
            model=method.spec, rpc=method.rpc, path=method.path, metadata=stream.metadata,
            peer=None, deadline=stream.deadline,
        )
        self._stream = stream
        self.args: Sequence[Any] = ()

    @property
    def peer(self) -> str | None:
        """Read from the connection only when someone asks (most calls never do)."""
        addr = self._stream.peer.addr()
        return None if addr is None else f"{addr[0]}:{addr[1]}"


class MethodHandler:
    """Serves one rpc: decoding, the composed middleware chain, the runner, encoding."""

    def __init__(
        self,
        method: MethodSchema,
        *,
        runner: Runner,
        middleware: Sequence[Middleware],
        gate: Gate,
        errors: ErrorMapper,
        pool: Executor,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.method = method
        self.max_message_bytes = max_message_bytes
        self.runner = runner
        self._gate = gate
        self._errors = errors
        self._pool = pool
        self._label = f"{method.spec.name!r} version {method.spec.version!r}"
        self._with_inputs = bool(middleware)
        shape = method.spec.streaming
        terminal: CallNext = self._run_unary
        self.handle: Callable[[Stream[Any, Any]], Any] = self._unary
        if shape is not Streaming.UNARY:
            streams = StreamingCalls(self, pool)
            terminal, self.handle = streams.terminal, streams.handle
        self._call = compose(middleware, terminal)
        # A unary request that cannot be read still runs the chain (auth answers first; logs
        # and metrics count it); this terminal then raises the error it carries.
        self._call_unread = compose(middleware, _raise_unread)
        self.cardinality = _CARDINALITY[shape]

    async def _run_unary(self, ctx: CallContext) -> Any:
        """Innermost step of the middleware chain for unary calls."""
        return await self.runner.submit(ctx.args, ctx)  # type: ignore[attr-defined]

    def _new_call(self, stream: Stream[Any, Any]) -> Call:
        return Call(self.method, stream)

    async def _unary(self, stream: Stream[Any, Any]) -> None:
        if not self._admit():
            return await self._refuse(stream)
        ctx = Call(self.method, stream)
        try:
            args = await self._read_request(stream, ctx)
            if self._with_inputs:
                ctx.inputs = dict(zip(self.method.inputs.names, args, strict=True))
            result = await self._call(ctx)
            response = self._encode(result)
            await stream.send_message(response)
            ctx.messages_out += 1
            await stream.send_trailing_metadata(metadata=ctx.trailers())
            ctx.finish("OK", None)
        except BaseException as exc:
            await self._fail(stream, ctx, exc)
        finally:
            self._gate.exit()

    # -- shared steps ---------------------------------------------------------------------

    async def _read_request(self, stream: Stream[Any, Any], ctx: Call) -> Sequence[Any]:
        """Receive and decode the one request of a unary or server-streaming call."""
        try:
            request = await self._receive(stream)
            if request is None:
                raise InvalidArgument(f"{self.method.rpc} needs a request message; the client sent none")
            ctx.messages_in += 1
            ctx.args = args = self.method.inputs.decode(request)
        except BlazeError as exc:
            ctx.state[_UNREAD] = exc
            await self._call_unread(ctx)
            raise
        return args

    def _admit(self) -> bool:
        if not self._gate.open:
            return False
        self._gate.enter()
        return True

    async def _refuse(self, stream: Stream[Any, Any]) -> None:
        await stream.send_trailing_metadata(
            status=Status.UNAVAILABLE, status_message="server is not accepting calls (starting or draining)"
        )

    async def _receive(self, stream: Stream[Any, Any]) -> Any:
        try:
            return await self._read_message(stream)
        except (GRPCError, StreamTerminatedError, asyncio.CancelledError, BlazeError):
            raise
        except Exception as exc:
            raise InvalidArgument(f"request to {self.method.rpc} could not be decoded: {exc}") from exc

    async def _read_message(self, stream: Stream[Any, Any]) -> Any:
        """grpclib's ``Stream.recv_message``, but refusing an oversize message by its length prefix.

        grpclib reads a whole message before anyone can look at its size; here the
        5-byte prefix is checked first, so an oversize body is never buffered beyond
        the HTTP/2 flow-control window (grpclib acknowledges data as it is read, and
        the rest when the stream is released). Mirrors grpclib 0.4.9 ``server.Stream``.
        """
        h2_stream = stream._stream
        prefix = await h2_stream.recv_data(5)
        if not prefix:
            return None
        if prefix[0]:
            raise BlazeError("compressed request messages are not supported", status=Status.UNIMPLEMENTED)
        size = int.from_bytes(prefix[1:5], "big")
        if size > self.max_message_bytes:
            raise ResourceExhausted(
                f"request message to {self.method.rpc} is {size} bytes, over the server's limit of "
                f"{self.max_message_bytes} bytes (--max-message-mb)"
            )
        message = stream._codec.decode(await h2_stream.recv_data(size), stream._recv_type)
        message, = await stream._dispatch.recv_message(message)
        stream._messages_received += 1
        connection = h2_stream.connection
        connection.messages_received += 1
        connection.last_message_received = time.monotonic()
        return message

    def _encode(self, result: Any) -> Any:
        method = self.method
        try:
            return method.response_type(**method.outputs.encode(method.result_values(result)))
        except Exception as exc:
            # A bad output is the model's fault, never the client's: always INTERNAL.
            reason = exc.message if isinstance(exc, BlazeError) else f"{type(exc).__name__}: {public_text(exc)}"
            raise BlazeError(
                f"model {self._label} returned a value that does not fit its declared output: {reason}"
            ) from exc

    async def _fail(self, stream: Stream[Any, Any], ctx: CallContext, exc: BaseException) -> None:
        if isinstance(exc, (asyncio.CancelledError, StreamTerminatedError)):
            ctx.finish(cut_short_status(ctx.time_remaining()).name, None)
            raise exc
        if isinstance(exc, GRPCError):
            status, message = exc.status, exc.message or ""
        elif isinstance(exc, Exception):
            status, message = self._errors.map(exc, self._label)
            if status is Status.INTERNAL:
                log.error("model %s failed", self._label, exc_info=exc, extra={"blazerpc": {
                    "method": ctx.path, "model": ctx.model.name, "version": ctx.model.version,
                    "request_id": ctx.state.get("request_id"),
                }})
        else:
            raise exc
        message = cap_message(message)
        ctx.finish(status.name, message)
        try:
            await stream.send_trailing_metadata(
                status=status, status_message=message, metadata=ctx.trailers()
            )
        except Exception:  # the client may be gone; nothing left to tell it
            log.debug("could not send status to %s", ctx.peer)


_UNREAD = "blazerpc.unread_request"


async def _raise_unread(ctx: CallContext) -> Any:
    raise ctx.state[_UNREAD]


class InferenceService:
    """The grpclib servable for every model rpc."""

    def __init__(self, handlers: Sequence[MethodHandler]) -> None:
        self.handlers = list(handlers)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            h.method.path: grpclib.const.Handler(
                h.handle, h.cardinality, h.method.request_type, h.method.response_type
            )
            for h in self.handlers
        }
