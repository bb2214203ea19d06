"""Server reflection, ``grpc.reflection.v1`` and ``v1alpha``, from the server's own pool.

Lists every hosted service (reflection included) and serves file descriptors with their
dependencies, so tools with no ``.proto`` can call any model. Symbols our pool lacks
(services contributed by plugins from generated modules) are looked up in protobuf's
default pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpclib.const
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FileDescriptor
from grpclib.const import Status
from grpclib.server import Stream

from blazerpc_core.server.status import cap_message
from blazerpc_core.server.system_protos import REFLECTION_SERVICES


class ReflectionService:
    """One instance per protocol version; both share the service list and pools."""

    def __init__(self, service: str, pool: descriptor_pool.DescriptorPool, service_names: Sequence[str]) -> None:
        self._service = service
        self._pools = (pool, descriptor_pool.Default())
        package = service.rsplit(".", 1)[0]
        self._request = message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"{package}.ServerReflectionRequest"))
        self._response = message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"{package}.ServerReflectionResponse"))
        self._service_names = list(service_names)

    def _find(self, how: str, name: str) -> Any:
        for pool in self._pools:
            try:
                return getattr(pool, how)(name)  # type: ignore[no-any-return,unused-ignore]
            except KeyError:
                continue
        return None

    def _files(self, file: FileDescriptor) -> list[bytes]:
        """``file`` and its transitive dependencies, serialized, ``file`` first."""
        out, seen, todo = [], set(), [file]
        while todo:
            current = todo.pop(0)
            if current.name in seen:
                continue
            seen.add(current.name)
            proto = descriptor_pb2.FileDescriptorProto()
            current.CopyToProto(proto)
            out.append(proto.SerializeToString())
            todo.extend(current.dependencies)
        return out

    def _answer(self, request: Any) -> dict[str, Any]:
        kind = request.WhichOneof("message_request")
        if kind == "list_services":
            return {"list_services_response": {"service": [{"name": n} for n in self._service_names]}}
        file = None
        if kind == "file_by_filename":
            file = self._find("FindFileByName", request.file_by_filename)
        elif kind == "file_containing_symbol":
            symbol = request.file_containing_symbol
            file = self._find("FindFileContainingSymbol", symbol)
            if file is None and "." in symbol:
                # A method (``pkg.Service.Method``): protobuf's pools only index its service.
                service, _, method = symbol.rpartition(".")
                found = self._find("FindServiceByName", service)
                if found is not None and method in found.methods_by_name:
                    file = found.file
        elif kind in ("file_containing_extension", "all_extension_numbers_of_type"):
            # Our schemas declare no extensions.
            return _error(Status.NOT_FOUND, "no extensions are declared")
        else:
            return _error(Status.INVALID_ARGUMENT, "empty reflection request")
        if file is None:
            return _error(Status.NOT_FOUND, cap_message(f"{kind} {getattr(request, kind)!r} not found"))
        return {"file_descriptor_response": {"file_descriptor_proto": self._files(file)}}

    async def info(self, stream: Stream[Any, Any]) -> None:
        async for request in stream:
            answer = self._answer(request)
            await stream.send_message(
                self._response(valid_host=request.host, original_request=request, **answer)
            )

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            f"/{self._service}/ServerReflectionInfo": grpclib.const.Handler(
                self.info, grpclib.const.Cardinality.STREAM_STREAM, self._request, self._response)
        }


def _error(status: Status, message: str) -> dict[str, Any]:
    return {"error_response": {"error_code": status.value, "error_message": message}}


def reflection_services(pool: descriptor_pool.DescriptorPool, service_names: Sequence[str]) -> list[ReflectionService]:
    names = [*service_names, *REFLECTION_SERVICES]
    return [ReflectionService(service, pool, names) for service in REFLECTION_SERVICES]
