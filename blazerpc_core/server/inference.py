"""``blazerpc.InferenceService``: grpclib handlers built from the schema, one per rpc.

Request path: admission (draining?) → receive and decode → middleware chain → runner
(batcher or direct call) → encode → send. Every failure becomes a status with a message;
nothing a client sends can take the server down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpclib.const
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.server import Stream

from blazerpc_core.errors import BlazeError, InvalidArgument
from blazerpc_core.middleware import CallContext, CallNext, Middleware, compose
from blazerpc_core.registry import Streaming
from blazerpc_core.runtime.policy import Runner
from blazerpc_core.runtime.streams import LoopIterator, ThreadedIterator
from blazerpc_core.schema.builder import MethodSchema
from blazerpc_core.server.gate import Gate
from blazerpc_core.server.status import ErrorMapper

log = logging.getLogger("blazerpc.server")

_CARDINALITY = {
    Streaming.UNARY: grpclib.const.Cardinality.UNARY_UNARY,
    Streaming.SERVER: grpclib.const.Cardinality.UNARY_STREAM,
    Streaming.CLIENT: grpclib.const.Cardinality.STREAM_UNARY,
    Streaming.BIDI: grpclib.const.Cardinality.STREAM_STREAM,
}


class Call(CallContext):
    """The call context plus what the terminal step needs (the decoded arguments)."""

    __slots__ = ("args", "_stream")

    def __init__(self, method: MethodSchema, stream: Stream[Any, Any]) -> None:
        super().__init__(
            model=method.spec, rpc=method.rpc, path=method.path, metadata=stream.metadata,
            peer=None, deadline=stream.deadline,
        )
        self._stream = stream
        self.args: Sequence[Any] = ()

    @property  # type: ignore[override]
    def peer(self) -> str | None:
        addr = self._stream.peer.addr()
        return None if addr is None else f"{addr[0]}:{addr[1]}"

    @peer.setter
    def peer(self, value: str | None) -> None:
        pass


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
        pool: ThreadPoolExecutor,
    ) -> None:
        self.method = method
        self.runner = runner
        self._gate = gate
        self._errors = errors
        self._pool = pool
        self._label = f"{method.spec.name!r} version {method.spec.version!r}"
        self._with_inputs = bool(middleware)
        shape = method.spec.streaming
        terminal: CallNext = {
            Streaming.UNARY: self._run_unary,
            Streaming.SERVER: self._run_stream,
            Streaming.CLIENT: self._run_client_stream,
            Streaming.BIDI: self._run_stream,
        }[shape]
        self._call = compose(middleware, terminal)
        self.cardinality = _CARDINALITY[shape]
        self.handle: Callable[[Stream[Any, Any]], Any] = {
            Streaming.UNARY: self._unary,
            Streaming.SERVER: self._server_stream,
            Streaming.CLIENT: self._client_stream,
            Streaming.BIDI: self._client_stream,
        }[shape]

    # -- terminals (innermost step of the middleware chain) --------------------------------

    async def _run_unary(self, ctx: CallContext) -> Any:
        return await self.runner.submit(ctx.args, ctx)  # type: ignore[attr-defined]

    async def _run_stream(self, ctx: CallContext) -> AsyncIterator[Any]:
        """Start the model's stream; returns an async iterator of its results."""
        spec = self.method.spec
        args = ctx.args  # type: ignore[attr-defined]
        if spec.is_async:
            result = spec.func(*args)
            if not hasattr(result, "__aiter__"):
                result = await result
            return result  # type: ignore[no-any-return]
        if spec.is_generator:
            return ThreadedIterator(lambda: spec.func(*args), self._pool)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._pool, lambda: spec.func(*args))
        if hasattr(result, "__aiter__"):
            return result  # type: ignore[no-any-return]
        return ThreadedIterator(lambda: result, self._pool)

    async def _run_client_stream(self, ctx: CallContext) -> Any:
        spec = self.method.spec
        args = ctx.args  # type: ignore[attr-defined]
        if spec.is_async:
            return await spec.func(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: spec.func(*args))

    # -- handlers by shape -----------------------------------------------------------------

    async def _unary(self, stream: Stream[Any, Any]) -> None:
        if not self._admit():
            return await self._refuse(stream)
        ctx = Call(self.method, stream)
        try:
            request = await self._receive(stream)
            ctx.args = args = self.method.inputs.decode(request)
            if self._with_inputs:
                ctx.inputs = dict(zip(self.method.inputs.names, args, strict=True))
            result = await self._call(ctx)
            response = self._encode(result)
            await stream.send_message(response)
            await stream.send_trailing_metadata(metadata=ctx.trailing_metadata or None)
            ctx.finish("OK", None)
        except BaseException as exc:
            await self._fail(stream, ctx, exc)
        finally:
            self._gate.exit()

    async def _server_stream(self, stream: Stream[Any, Any]) -> None:
        if not self._admit():
            return await self._refuse(stream)
        ctx = Call(self.method, stream)
        try:
            request = await self._receive(stream)
            ctx.args = args = self.method.inputs.decode(request)
            ctx.inputs = dict(zip(self.method.inputs.names, args, strict=True))
            await self._send_all(stream, ctx)
        except BaseException as exc:
            await self._fail(stream, ctx, exc)
        finally:
            self._gate.exit()

    async def _client_stream(self, stream: Stream[Any, Any]) -> None:
        if not self._admit():
            return await self._refuse(stream)
        ctx = Call(self.method, stream)
        try:
            items = self._incoming(stream, ctx)
            spec = self.method.spec
            ctx.args = [items if spec.is_async else LoopIterator(items, asyncio.get_running_loop())]
            if spec.streaming is Streaming.BIDI:
                await self._send_all(stream, ctx)
            else:
                result = await self._call(ctx)
                await stream.send_message(self._encode(result))
                await stream.send_trailing_metadata(metadata=ctx.trailing_metadata or None)
                ctx.finish("OK", None)
        except BaseException as exc:
            await self._fail(stream, ctx, exc)
        finally:
            self._gate.exit()

    async def _incoming(self, stream: Stream[Any, Any], ctx: CallContext) -> AsyncIterator[Any]:
        """Decoded items of the client's stream, one per request message."""
        while True:
            message = await self._receive(stream)
            if message is None:
                return
            ctx.messages_in += 1
            (item,) = self.method.inputs.decode(message)
            yield item

    async def _send_all(self, stream: Stream[Any, Any], ctx: CallContext) -> None:
        results = await self._call(ctx)
        try:
            async for result in results:
                await stream.send_message(self._encode(result))
                ctx.messages_out += 1
        finally:
            close = getattr(results, "aclose", None)
            if close is not None:
                await close()
        await stream.send_trailing_metadata(metadata=ctx.trailing_metadata or None)
        ctx.finish("OK", None)

    # -- shared steps ---------------------------------------------------------------------

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
            return await stream.recv_message()
        except (GRPCError, StreamTerminatedError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise InvalidArgument(f"request to {self.method.rpc} could not be decoded: {exc}") from exc

    def _encode(self, result: Any) -> Any:
        method = self.method
        try:
            return method.response_type(**method.outputs.encode(method.result_values(result)))
        except Exception as exc:
            # A bad output is the model's fault, never the client's: always INTERNAL.
            reason = exc.message if isinstance(exc, BlazeError) else f"{type(exc).__name__}: {exc}"
            raise BlazeError(
                f"model {self._label} returned a value that does not fit its declared output: {reason}"
            ) from exc

    async def _fail(self, stream: Stream[Any, Any], ctx: CallContext, exc: BaseException) -> None:
        if isinstance(exc, (asyncio.CancelledError, StreamTerminatedError)):
            remaining = ctx.time_remaining()
            expired = remaining is not None and remaining <= 0
            ctx.finish("DEADLINE_EXCEEDED" if expired else "CANCELLED", None)
            raise exc
        if isinstance(exc, GRPCError):
            status, message = exc.status, exc.message or ""
        elif isinstance(exc, Exception):
            status, message = self._errors.map(exc, self._label)
            if status is Status.INTERNAL:
                log.error("model %s failed", self._label, exc_info=exc)
        else:
            raise exc
        ctx.finish(status.name, message)
        try:
            await stream.send_trailing_metadata(
                status=status, status_message=message, metadata=ctx.trailing_metadata or None
            )
        except Exception:  # noqa: BLE001 - the client may be gone; nothing left to tell it
            log.debug("could not send status to %s", ctx.peer)


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
