"""ModelInfer and ModelStreamInfer: protocol requests in, the model called like a native call, responses out.

A request is decoded into the model's Python arguments (:mod:`.convert`) and handed to
``context.calls``, so it takes the same gate, middleware (auth, rate limits, metrics,
access log), runner and batcher as a native call: concurrent one-row requests to a
batched model share one model call. Request parameters:

* ``priority`` (1 is the highest level, 201 the lowest, 0 the default, as Triton counts
  them) becomes the batcher's ``x-blazerpc-priority`` of ``101 - priority``;
* ``timeout`` (microseconds) becomes the call's deadline when it is sooner than the
  client's own.

ModelStreamInfer answers each request of the stream as it comes (several at once, up to
:data:`STREAM_CONCURRENCY`): a unary model with one response, a server-streaming
("decoupled") model with one response per item, then an empty final response when the
request sets ``triton_enable_empty_final_response``. A request that fails gets a response
with ``error_message`` and the stream goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.metadata import Deadline
from grpclib.server import Stream
from multidict import MultiDict

from blazerpc_core.context import Calls
from blazerpc_core.defaults.open_inference.convert import decode_inputs, encode_outputs, requested_outputs
from blazerpc_core.defaults.open_inference.descriptors import SERVICE_FULL_NAME, Messages
from blazerpc_core.defaults.open_inference.metadata import DEFAULT_PRIORITY_LEVEL, PRIORITY_LEVELS
from blazerpc_core.defaults.open_inference.statistics import Statistics
from blazerpc_core.defaults.open_inference.tensor_form import Forms, TensorForm
from blazerpc_core.errors import BlazeError, DeadlineExceeded, InvalidArgument, client_text
from blazerpc_core.runtime.queue import PRIORITY_HEADER
from blazerpc_core.server.status import cap_message, public_text
from blazerpc_core.server.wire.messages import send_message

log = logging.getLogger("blazerpc.open_inference")

#: Requests of one ModelStreamInfer call answered at once; the stream reads no further until one is done.
STREAM_CONCURRENCY = 64
EMPTY_FINAL = "triton_enable_empty_final_response"
FINAL = "triton_final_response"


class Parameters:
    """What a request's ``priority`` and ``timeout`` parameters change: its metadata and deadline."""

    __slots__ = ("deadline", "metadata", "timeout_us")

    def __init__(self, request: Any, metadata: Any, deadline: Deadline | None) -> None:
        self.metadata = metadata
        self.deadline = deadline
        self.timeout_us = 0
        parameters = request.parameters
        if not parameters:
            return
        if "priority" in parameters:
            level = _integer(parameters["priority"], "priority")
            if not 0 <= level <= PRIORITY_LEVELS:
                raise InvalidArgument(f"parameter 'priority' is {level}; use 1 (highest) to {PRIORITY_LEVELS}, "
                                      "or 0 for the default level")
            if level:
                self.metadata = MultiDict(metadata or ())
                self.metadata[PRIORITY_HEADER] = str(DEFAULT_PRIORITY_LEVEL - level)
        if "timeout" in parameters:
            timeout = _integer(parameters["timeout"], "timeout")
            if timeout < 0:
                raise InvalidArgument(f"parameter 'timeout' is {timeout} µs; it must be 0 (none) or more")
            if timeout:
                self.timeout_us = timeout
                mine = Deadline.from_timeout(timeout / 1e6)
                if deadline is None or mine < deadline:
                    self.deadline = mine

    def expires(self) -> float | None:
        """When the ``timeout`` parameter ends the call, in loop time (the server enforces the client's own)."""
        if not self.timeout_us or self.deadline is None:
            return None
        return asyncio.get_running_loop().time() + self.deadline.time_remaining()

    def timed_out(self, label: str) -> DeadlineExceeded:
        return DeadlineExceeded(f"the request's timeout of {self.timeout_us} µs passed before model {label} answered")


def _integer(parameter: Any, name: str) -> int:
    kind = parameter.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param"):
        raise InvalidArgument(f"parameter {name!r} must be an integer (int64_param or uint64_param), not {kind}")
    return int(getattr(parameter, kind))


def _flag(request: Any, name: str) -> bool:
    parameter = request.parameters.get(name) if request.parameters else None
    return parameter is not None and parameter.WhichOneof("parameter_choice") == "bool_param" and parameter.bool_param


class Inference:
    """The two inference rpcs of the service (see the module docstring)."""

    def __init__(self, calls: Calls, forms: Forms, statistics: Statistics, messages: Messages) -> None:
        self._calls = calls
        self._forms = forms
        self._statistics = statistics
        self._response = messages.ModelInferResponse
        self._stream_response = messages.ModelStreamInferResponse
        #: Per model version and rpc, the path its calls are logged and counted under (metrics key series by it).
        self._paths: dict[tuple[str, str, str], str] = {}

    def _path(self, name: str, version: str, rpc: str) -> str:
        key = (name, version, rpc)
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = f"/{SERVICE_FULL_NAME}/{rpc}/{name}/{version}"
        return path

    def _begin(self, request: Any, *, streaming: bool) -> tuple[Any, TensorForm]:
        entry = self._calls.entry(request.model_name, request.model_version)
        form = self._forms.of(entry.model)
        if form.decoupled and not streaming:
            raise InvalidArgument(f"model {entry.label} streams its results (decoupled); call it with ModelStreamInfer")
        return entry, form

    async def infer(self, request: Any, stream: Stream[Any, Any], peer: str | None) -> Any:
        """The ``ModelInferResponse`` of one request of a unary model."""
        entry, form = self._begin(request, streaming=False)
        started = time.perf_counter()
        args = decode_inputs(form, request)
        wanted = requested_outputs(form, request)
        parameters = Parameters(request, stream.metadata, stream.deadline)
        decoded = time.perf_counter()
        call = self._calls.call(
            entry, args, rpc="ModelInfer", path=self._path(entry.spec.name, entry.spec.version, "ModelInfer"),
            metadata=parameters.metadata, peer=peer, deadline=parameters.deadline,
        )
        expires = parameters.expires()
        if expires is None:  # no timeout parameter: the call's own deadline is enforced by the server
            result = await call
        else:
            try:
                async with asyncio.timeout_at(expires):
                    result = await call
            except TimeoutError:
                raise parameters.timed_out(entry.label) from None
        answered = time.perf_counter()
        outputs, contents = encode_outputs(form, result, wanted)
        response = self._response(
            model_name=entry.spec.name, model_version=entry.spec.version, id=request.id, outputs=outputs,
            raw_output_contents=contents,
        )
        self._statistics.add_io(entry.spec, decoded - started, time.perf_counter() - answered)
        return response

    async def responses(self, request: Any, stream: Stream[Any, Any], peer: str | None) -> AsyncIterator[Any]:
        """The ``ModelInferResponse`` messages one request of a ModelStreamInfer call gets."""
        entry, form = self._begin(request, streaming=True)
        final = _flag(request, EMPTY_FINAL)
        if not form.decoupled:
            response = await self.infer(request, stream, peer)
            if final:
                response.parameters[FINAL].bool_param = True
            yield response
            return
        args = decode_inputs(form, request)
        wanted = requested_outputs(form, request)
        parameters = Parameters(request, stream.metadata, stream.deadline)
        path = self._path(entry.spec.name, entry.spec.version, "ModelStreamInfer")
        items = self._calls.stream(entry, args, rpc="ModelStreamInfer", path=path, metadata=parameters.metadata,
                                   peer=peer, deadline=parameters.deadline)
        expires = parameters.expires()
        try:
            while True:
                # The timeout covers each step of the model, never the consumer's sending in between.
                try:
                    async with asyncio.timeout_at(expires):
                        item = await anext(items)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise parameters.timed_out(entry.label) from None
                outputs, contents = encode_outputs(form, item, wanted)
                response = self._response(
                    model_name=entry.spec.name, model_version=entry.spec.version, id=request.id,
                    outputs=outputs, raw_output_contents=contents,
                )
                if final:
                    response.parameters[FINAL].bool_param = False
                yield response
        finally:
            await items.aclose()  # type: ignore[attr-defined]
        if final:
            done = self._response(model_name=entry.spec.name, model_version=entry.spec.version, id=request.id)
            done.parameters[FINAL].bool_param = True
            yield done

    def _error(self, request: Any, status: Status, message: str) -> Any:
        """The stream response telling one request's failure (the stream itself goes on)."""
        return self._stream_response(
            error_message=cap_message(f"{status.name}: {message}"),
            infer_response={"model_name": request.model_name, "model_version": request.model_version,
                            "id": request.id},
        )

    async def stream(self, stream: Stream[Any, Any], receive: Any, peer: str | None) -> None:
        """Answer every request of a ModelStreamInfer call; ``receive()`` gives the next one (None after the last)."""
        send_lock = asyncio.Lock()
        slots = asyncio.Semaphore(STREAM_CONCURRENCY)
        tasks: set[asyncio.Task[None]] = set()

        async def send(message: Any) -> None:
            async with send_lock:
                await send_message(stream, message)

        async def answer(request: Any) -> None:
            try:
                async for response in self.responses(request, stream, peer):
                    await send(self._stream_response(infer_response=response))
            except (BlazeError, GRPCError) as exc:
                await send(self._error(request, exc.status, exc.message or ""))
            except Exception as exc:
                log.exception("ModelStreamInfer failed on a request to %s", client_text(request.model_name))
                await send(self._error(request, Status.INTERNAL, f"{type(exc).__name__}: {public_text(exc)}"))
            finally:
                slots.release()

        try:
            while True:
                request = await receive()
                if request is None:
                    break
                await slots.acquire()
                task = asyncio.ensure_future(answer(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in list(tasks):
                with contextlib.suppress(BaseException):
                    await task

