"""``blazerpc.ManagementService``: list, describe, load, unload and reload models, and switch default versions.

Read rpcs (ListModels, DescribeModel) are always on. The others change what the server
serves and answer FAILED_PRECONDITION unless it runs with ``--model-control explicit`` (or
``poll``). When auth is configured, every rpc needs a token: the management tokens
(``--management-token-file``) when given, else the inference tokens.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpclib.const
from google.protobuf import descriptor_pool, message_factory
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from blazerpc_core.defaults.management.descriptors import MUTATING, RPCS, SERVICE_FULL_NAME, management_file
from blazerpc_core.errors import BlazeError, RegistrationError
from blazerpc_core.runtime.batcher import Batcher
from blazerpc_core.security.auth import INVALID, MISSING, TokenChecker, presented_token
from blazerpc_core.server.host import ModelEntry, ModelHost
from blazerpc_core.server.status import cap_message, public_text
from blazerpc_core.settings import ServeSettings

log = logging.getLogger("blazerpc.management")


class ManagementService:
    """The grpclib servable of the management rpcs; see the module docstring."""

    def __init__(self, host: ModelHost, settings: ServeSettings, checker: TokenChecker | None) -> None:
        self._host = host
        self._control = settings.model_control
        self._checker = checker
        pool = descriptor_pool.DescriptorPool()
        pool.Add(management_file())
        self._types = {
            name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"blazerpc.{name}"))
            for name in {t for pair in RPCS.values() for t in pair} | {"ModelStatus", "FieldInfo"}
        }
        self._handlers: dict[str, Callable[[Any], Awaitable[Any]]] = {
            "ListModels": self._list,
            "DescribeModel": self._describe,
            "LoadModel": self._load,
            "UnloadModel": self._unload,
            "ReloadModel": self._reload,
            "SetDefaultVersion": self._set_default,
        }

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            f"/{SERVICE_FULL_NAME}/{rpc}": grpclib.const.Handler(
                self._handler(rpc), grpclib.const.Cardinality.UNARY_UNARY,
                self._types[request], self._types[response],
            )
            for rpc, (request, response) in RPCS.items()
        }

    def _handler(self, rpc: str) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
        answer = self._handlers[rpc]

        async def handle(stream: Stream[Any, Any]) -> None:
            self._authorize(stream.metadata)
            if rpc in MUTATING and self._control not in ("explicit", "poll"):
                raise GRPCError(
                    Status.FAILED_PRECONDITION,
                    f"{rpc} changes the served models; start the server with --model-control explicit (or poll)",
                )
            request = await stream.recv_message()
            try:
                reply = await answer(request)
            except GRPCError:
                raise
            except BlazeError as exc:
                raise GRPCError(exc.status, cap_message(exc.message)) from None
            except RegistrationError as exc:
                raise GRPCError(Status.INVALID_ARGUMENT, cap_message(str(exc))) from None
            except Exception as exc:  # a model failed to load: the old state is intact
                log.warning("%s failed", rpc, exc_info=exc)
                raise GRPCError(Status.INTERNAL, cap_message(f"{type(exc).__name__}: {public_text(exc)}")) from None
            await stream.send_message(reply)

        return handle

    def _authorize(self, metadata: Any) -> None:
        if self._checker is None:
            return
        token = presented_token(metadata)
        if token is None:
            raise GRPCError(Status.UNAUTHENTICATED, MISSING)
        if self._checker.identify(token) is None:
            raise GRPCError(Status.UNAUTHENTICATED, INVALID)

    # -- the rpcs ------------------------------------------------------------------------

    async def _list(self, request: Any) -> Any:
        return self._types["ModelList"](models=[self._status(e) for e in self._host.all_entries()])

    async def _describe(self, request: Any) -> Any:
        entry = self._find(request.name, request.version)
        model, spec = entry.model, entry.spec
        fields = self._types["FieldInfo"]
        empty = inspect.Parameter.empty
        inputs = [
            fields(name=name, type=mapping.description, optional=mapping.optional or default is not empty)
            for (name, mapping), (_, _, default) in zip(model.input_fields, spec.inputs, strict=True)
        ]
        outputs = [fields(name=name, type=mapping.description) for name, mapping in model.output_fields]
        return self._types["ModelDescription"](
            status=self._status(entry), inputs=inputs, outputs=outputs, batching=_batching(entry),
            counters={"calls": entry.calls, "failures": entry.failures, "inflight": entry.inflight,
                      "load_seconds": entry.load_seconds, "warmup_seconds": entry.warm_seconds},
            streaming=spec.streaming.value, description=spec.description,
        )

    async def _load(self, request: Any) -> Any:
        if not request.source:
            raise GRPCError(Status.INVALID_ARGUMENT, "LoadModel needs a source")
        entries = await self._host.load(request.source)
        log.info("loaded %s from %s", ", ".join(e.label for e in entries), entries[0].origin.source)
        return self._list_of(entries)

    async def _unload(self, request: Any) -> Any:
        entries = await self._host.unload(_name(request), request.version or None)
        log.info("unloaded %s", ", ".join(e.label for e in entries))
        return self._list_of(entries)

    async def _reload(self, request: Any) -> Any:
        entries = await self._host.reload(_name(request), request.version or None)
        log.info("reloaded %s", ", ".join(e.label for e in entries))
        return self._list_of(entries)

    async def _set_default(self, request: Any) -> Any:
        if not request.version:
            raise GRPCError(Status.INVALID_ARGUMENT, "SetDefaultVersion needs a version")
        entry = await self._host.set_default(_name(request), request.version)
        log.info("model %s is now the default version", entry.label)
        return self._status(entry)

    # -- answers ---------------------------------------------------------------------------

    def _find(self, name: str, version: str) -> ModelEntry:
        entry = self._host.entry(name, version or None)
        if entry is None:
            entry = next((e for e in self._host.all_entries() if e.spec.name == name
                          and (not version or e.spec.version == version)), None)
        if entry is None:
            what = f"model {name!r}" + (f" version {version!r}" if version else "")
            raise GRPCError(Status.NOT_FOUND, cap_message(f"{what} is not loaded"))
        return entry

    def _list_of(self, entries: list[ModelEntry]) -> Any:
        return self._types["ModelList"](models=[self._status(e) for e in entries])

    def _status(self, entry: ModelEntry) -> Any:
        host = self._host
        served = host.entries.get(entry.key) is entry
        is_default = served and host.registry.default(entry.spec.name).version == entry.spec.version
        rpcs = [m.rpc for m in host.schema.methods if served and m.spec is entry.spec]
        return self._types["ModelStatus"](
            name=entry.spec.name, version=entry.spec.version, state=entry.state.value, is_default=is_default,
            source=entry.origin.source, error=entry.error, rpcs=rpcs,
        )


def _name(request: Any) -> str:
    if not request.name:
        raise GRPCError(Status.INVALID_ARGUMENT, "a model name is needed")
    return str(request.name)


def _batching(entry: ModelEntry) -> dict[str, Any]:
    runner = entry.runner
    if not isinstance(runner, Batcher):
        return {"batched": False}
    config = runner.config
    return {
        "batched": True, "policy": getattr(runner.rule, "name", type(runner.rule).__name__),
        "max_batch_size": config.max_batch_size, "batch_timeout_ms": config.batch_timeout * 1000,
        "max_queue_size": config.max_queue_size, "max_concurrent_batches": config.max_concurrent_batches,
        "max_latency_ms": config.max_latency * 1000,
    }
