"""``inference.GRPCInferenceService``: the Open Inference Protocol (KServe v2, Triton) beside the native service.

Every rpc of the published service is routed: inference (:mod:`.infer`), health and
metadata, model configuration and statistics, the repository (:mod:`.repository`).
Shared memory, tracing and log settings answer UNIMPLEMENTED, saying why. A failure
becomes a status with a message: what a client sent is never answered INTERNAL.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpclib.const
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.server import Stream

from blazerpc_core.context import Calls, Health
from blazerpc_core.defaults.open_inference.descriptors import RPCS, SERVICE_FULL_NAME, Messages
from blazerpc_core.defaults.open_inference.infer import Inference
from blazerpc_core.defaults.open_inference.metadata import model_config, model_metadata
from blazerpc_core.defaults.open_inference.repository import Repository
from blazerpc_core.defaults.open_inference.statistics import Statistics
from blazerpc_core.defaults.open_inference.tensor_form import Forms, TensorForm
from blazerpc_core.errors import BlazeError, InvalidArgument, client_text
from blazerpc_core.server.host import ModelEntry, ModelHost, ModelState
from blazerpc_core.server.status import cap_message, public_text
from blazerpc_core.server.wire.messages import receive_message, send_message
from blazerpc_core.settings import ServeSettings

log = logging.getLogger("blazerpc.open_inference")

SERVING = 1
#: Protocol extensions this server implements (ServerMetadata).
EXTENSIONS = ("binary_tensor_data", "parameters", "model_configuration", "model_repository", "statistics")
_UNSUPPORTED = {
    "SystemSharedMemory": "system shared memory is not supported by blazerpc; send tensors in the request",
    "CudaSharedMemory": "CUDA shared memory is not supported by blazerpc; send tensors in the request",
    "TraceSetting": "trace settings are not supported by blazerpc; trace calls with the blazerpc-otel plugin",
    "LogSettings": "log settings are not supported by blazerpc; set them with --log-level and --log-format",
}

Answer = Callable[[Any, Stream[Any, Any]], Awaitable[Any]]


def _version() -> str:
    try:
        return importlib.metadata.version("blazerpc-core")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class OpenInferenceService:
    """The grpclib servable of ``inference.GRPCInferenceService``; see the module docstring."""

    def __init__(
        self, *, host: ModelHost, calls: Calls, health: Callable[[], Health | None], settings: ServeSettings,
        forms: Forms, statistics: Statistics, repository: Repository, messages: Messages,
    ) -> None:
        self._host = host
        self._health = health
        self._settings = settings
        self._forms = forms
        self._statistics = statistics
        self._repository = repository
        self._messages = messages
        self._inference = Inference(calls, forms, statistics, messages)
        self._version = _version()
        self._answers: dict[str, Answer] = {
            "ServerLive": self._server_live,
            "ServerReady": self._server_ready,
            "ModelReady": self._model_ready,
            "ServerMetadata": self._server_metadata,
            "ModelMetadata": self._model_metadata,
            "ModelInfer": self._model_infer,
            "ModelConfig": self._model_config,
            "ModelStatistics": self._model_statistics,
            "RepositoryIndex": self._repository_index,
            "RepositoryModelLoad": self._repository_load,
            "RepositoryModelUnload": self._repository_unload,
        }

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping = {}
        for rpc, (request, response, client_streams, server_streams) in RPCS.items():
            handle: Callable[[Stream[Any, Any]], Awaitable[None]]
            if rpc == "ModelStreamInfer":
                handle = self._model_stream_infer
            elif rpc in self._answers:
                handle = self._unary(rpc, self._answers[rpc])
            else:
                handle = self._unsupported(rpc)
            cardinality = grpclib.const.Cardinality.STREAM_STREAM if client_streams and server_streams \
                else grpclib.const.Cardinality.UNARY_UNARY
            mapping[f"/{SERVICE_FULL_NAME}/{rpc}"] = grpclib.const.Handler(
                handle, cardinality, self._messages[request], self._messages[response],
            )
        return mapping

    # -- plumbing -------------------------------------------------------------------------

    async def _receive(self, stream: Stream[Any, Any], rpc: str, *, first: bool) -> Any:
        try:
            return await receive_message(
                stream, rpc=rpc, max_message_bytes=self._settings.max_message_bytes, first=first
            )
        except (GRPCError, StreamTerminatedError, BlazeError):
            raise
        except Exception as exc:
            raise InvalidArgument(f"request to {rpc} could not be decoded: {public_text(exc)}") from exc

    def _unary(self, rpc: str, answer: Answer) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
        async def handle(stream: Stream[Any, Any]) -> None:
            try:
                request = await self._receive(stream, rpc, first=True)
                if request is None:
                    raise InvalidArgument(f"{rpc} needs a request message; the client sent none")
                reply = await answer(request, stream)
            except BlazeError as exc:
                raise GRPCError(exc.status, cap_message(exc.message)) from None
            except (GRPCError, StreamTerminatedError):
                raise
            except Exception as exc:
                log.exception("%s failed", rpc)
                raise GRPCError(Status.INTERNAL, cap_message(f"{rpc} failed: {type(exc).__name__}: "
                                                             f"{public_text(exc)}")) from None
            await send_message(stream, reply)

        return handle

    def _unsupported(self, rpc: str) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
        reason = next(text for prefix, text in _UNSUPPORTED.items() if rpc.startswith(prefix))

        async def handle(stream: Stream[Any, Any]) -> None:
            raise GRPCError(Status.UNIMPLEMENTED, f"{rpc}: {reason}")

        return handle

    @staticmethod
    def _peer(stream: Stream[Any, Any]) -> str | None:
        addr = stream.peer.addr()
        return None if addr is None else f"{addr[0]}:{addr[1]}"

    def _served(self, name: str, version: str) -> ModelEntry:
        """The entry of a model version, or NOT_FOUND naming it."""
        entry = self._host.entry(name, version or None)
        if entry is None:
            what = f"model {client_text(name)}" + (f" version {client_text(version)}" if version else "")
            raise BlazeError(f"{what} is not served", status=Status.NOT_FOUND)
        return entry

    def _form(self, entry: ModelEntry) -> TensorForm:
        form = self._forms.of(entry.model)
        if form.reason:
            raise InvalidArgument(f"model {entry.label} has no Open Inference tensor form: {form.reason}")
        return form

    # -- health and metadata --------------------------------------------------------------

    async def _server_live(self, request: Any, stream: Stream[Any, Any]) -> Any:
        return self._messages.ServerLiveResponse(live=True)

    async def _server_ready(self, request: Any, stream: Stream[Any, Any]) -> Any:
        health = self._health()
        ready = health is not None and health.status("") == SERVING
        return self._messages.ServerReadyResponse(ready=ready)

    async def _model_ready(self, request: Any, stream: Stream[Any, Any]) -> Any:
        entry = self._host.entry(request.name, request.version or None)
        if entry is None:
            known = [e for e in self._host.all_entries() if e.spec.name == request.name
                     and (not request.version or e.spec.version == request.version)]
            if not known:
                self._served(request.name, request.version)  # raises NOT_FOUND naming it
            return self._messages.ModelReadyResponse(ready=False)
        ready = entry.state is ModelState.READY and entry.runner is not None
        return self._messages.ModelReadyResponse(ready=ready)

    async def _server_metadata(self, request: Any, stream: Stream[Any, Any]) -> Any:
        return self._messages.ServerMetadataResponse(name="blazerpc", version=self._version, extensions=EXTENSIONS)

    async def _model_metadata(self, request: Any, stream: Stream[Any, Any]) -> Any:
        entry = self._served(request.name, request.version)
        return self._messages.ModelMetadataResponse(**model_metadata(self._host, entry, self._form(entry)))

    async def _model_config(self, request: Any, stream: Stream[Any, Any]) -> Any:
        entry = self._served(request.name, request.version)
        config = model_config(self._host, entry, self._form(entry), self._settings)
        return self._messages.ModelConfigResponse(config=config)

    async def _model_statistics(self, request: Any, stream: Stream[Any, Any]) -> Any:
        if request.name:
            entries = self._host.matching(request.name, request.version or None)
            if not entries:
                self._served(request.name, request.version)  # raises NOT_FOUND naming it
        else:
            entries = [self._host.entries[(s.name, s.version)] for s in self._host.registry]
        stats = [self._statistics.of(e.spec.name, e.spec.version).message(e.spec.name, e.spec.version)
                 for e in entries]
        return self._messages.ModelStatisticsResponse(model_stats=stats)

    # -- inference ------------------------------------------------------------------------

    async def _model_infer(self, request: Any, stream: Stream[Any, Any]) -> Any:
        return await self._inference.infer(request, stream, self._peer(stream))

    async def _model_stream_infer(self, stream: Stream[Any, Any]) -> None:
        async def receive() -> Any:
            return await self._receive(stream, "ModelStreamInfer", first=False)

        try:
            await self._inference.stream(stream, receive, self._peer(stream))
        except BlazeError as exc:
            raise GRPCError(exc.status, cap_message(exc.message)) from None

    # -- the repository -------------------------------------------------------------------

    async def _repository_index(self, request: Any, stream: Stream[Any, Any]) -> Any:
        self._repository.authorize(stream.metadata)
        return self._messages.RepositoryIndexResponse(models=self._repository.index(request.ready))

    async def _repository_load(self, request: Any, stream: Stream[Any, Any]) -> Any:
        self._repository.authorize(stream.metadata)
        entries = await self._repository.load(request)
        log.info("loaded %s through RepositoryModelLoad", ", ".join(e.label for e in entries))
        return self._messages.RepositoryModelLoadResponse()

    async def _repository_unload(self, request: Any, stream: Stream[Any, Any]) -> Any:
        self._repository.authorize(stream.metadata)
        entries = await self._repository.unload(request)
        log.info("unloaded %s through RepositoryModelUnload", ", ".join(e.label for e in entries))
        return self._messages.RepositoryModelUnloadResponse()
