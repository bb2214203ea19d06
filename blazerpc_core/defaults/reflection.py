"""Default plugin ``reflection`` (essential): ``grpc.reflection.v1`` and ``v1alpha`` from the server's pool.

Lists every hosted service (reflection included) and serves file descriptors with their
dependencies, so tools with no ``.proto`` can call any model. It reads the server's
descriptors at each request, so models loaded or unloaded while serving appear and
disappear at once. Symbols the server's pool lacks (services contributed by plugins from
generated modules) are looked up in protobuf's default pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpclib.const
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FileDescriptor
from grpclib.const import Status
from grpclib.server import Stream

from blazerpc_core.markers import hookimpl
from blazerpc_core.server.status import cap_message
from blazerpc_core.server.system_protos import REFLECTION_SERVICES, reflection_file

if TYPE_CHECKING:
    from blazerpc_core.context import Descriptors, ServerContext


class ReflectionService:
    """One instance per protocol version; both read the same live descriptors."""

    def __init__(self, service: str, descriptors: Descriptors) -> None:
        self._service = service
        self._descriptors = descriptors
        package = service.rsplit(".", 1)[0]
        own = descriptor_pool.DescriptorPool()
        own.Add(reflection_file(package.rsplit(".", 1)[1]))
        self._request = message_factory.GetMessageClass(own.FindMessageTypeByName(f"{package}.ServerReflectionRequest"))
        self._response = message_factory.GetMessageClass(
            own.FindMessageTypeByName(f"{package}.ServerReflectionResponse")
        )

    def _find(self, how: str, name: str) -> Any:
        for pool in (self._descriptors.pool, descriptor_pool.Default()):
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
            names = self._descriptors.service_names()
            return {"list_services_response": {"service": [{"name": n} for n in names]}}
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


@hookimpl(trylast=True)
def blazerpc_services(context: ServerContext) -> list[Any]:
    for version in ("v1", "v1alpha"):
        context.descriptors.add_file(reflection_file(version))
    return [ReflectionService(service, context.descriptors) for service in REFLECTION_SERVICES]
