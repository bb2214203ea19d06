"""Message classes of the two standard protocols the client speaks besides a server's models.

The client needs ``grpc.health.v1`` and ``grpc.reflection.v1`` / ``v1alpha`` before it
knows anything else about a server. Their messages are declared here, in a descriptor
pool of the client's own, rather than imported from grpcio or grpclib modules: those
register the same symbols in protobuf's default pool, and two such registrations in one
process clash. Only the fields the client reads or writes are declared; protobuf skips
the others when parsing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"

#: ``grpc.health.v1.HealthCheckResponse.ServingStatus`` numbers.
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = range(4)
STATUS_NAMES = ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")

# (name, number, type, type name relative to the package or "", oneof index or None, repeated)
_Spec = tuple[str, int, int, str, int | None, bool]


def _add_message(
    file: descriptor_pb2.FileDescriptorProto, name: str, fields: Iterable[_Spec], oneof: str | None = None
) -> descriptor_pb2.DescriptorProto:
    message = file.message_type.add(name=name)
    if oneof:
        message.oneof_decl.add(name=oneof)
    for field_name, number, kind, type_name, oneof_index, repeated in fields:
        field = message.field.add(
            name=field_name, number=number, type=kind,
            label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
        )
        # An empty type_name would count as set and make the pool refuse the file.
        if type_name:
            field.type_name = f".{file.package}.{type_name}"
        if oneof_index is not None:
            field.oneof_index = oneof_index
    return message


def _health() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="blazerpc/client/health.proto", package="grpc.health.v1", syntax="proto3"
    )
    _add_message(file, "HealthCheckRequest", [("service", 1, _F.TYPE_STRING, "", None, False)])
    response = _add_message(
        file, "HealthCheckResponse",
        [("status", 1, _F.TYPE_ENUM, "HealthCheckResponse.ServingStatus", None, False)],
    )
    enum = response.enum_type.add(name="ServingStatus")
    for number, name in enumerate(STATUS_NAMES):
        enum.value.add(name=name, number=number)
    return file


def _reflection(version: str) -> descriptor_pb2.FileDescriptorProto:
    package = f"grpc.reflection.{version}"
    file = descriptor_pb2.FileDescriptorProto(
        name=f"blazerpc/client/reflection_{version}.proto", package=package, syntax="proto3"
    )
    text, message = _F.TYPE_STRING, _F.TYPE_MESSAGE
    _add_message(file, "ServerReflectionRequest", [
        ("host", 1, text, "", None, False),
        ("file_by_filename", 3, text, "", 0, False),
        ("file_containing_symbol", 4, text, "", 0, False),
        ("list_services", 7, text, "", 0, False),
    ], oneof="message_request")
    _add_message(file, "ServerReflectionResponse", [
        ("file_descriptor_response", 4, message, "FileDescriptorResponse", 0, False),
        ("list_services_response", 6, message, "ListServiceResponse", 0, False),
        ("error_response", 7, message, "ErrorResponse", 0, False),
    ], oneof="message_response")
    _add_message(file, "FileDescriptorResponse", [("file_descriptor_proto", 1, _F.TYPE_BYTES, "", None, True)])
    _add_message(file, "ListServiceResponse", [("service", 1, message, "ServiceResponse", None, True)])
    _add_message(file, "ServiceResponse", [("name", 1, text, "", None, False)])
    _add_message(file, "ErrorResponse", [
        ("error_code", 1, _F.TYPE_INT32, "", None, False), ("error_message", 2, text, "", None, False),
    ])
    return file


@dataclass(frozen=True)
class Protocols:
    """Request and response classes of health and both reflection versions."""

    health_request: Any
    health_response: Any
    #: service name -> (request class, response class)
    reflection: dict[str, tuple[Any, Any]]


@functools.cache
def protocols() -> Protocols:
    """Built once per process, in a pool no other code sees."""
    pool = descriptor_pool.DescriptorPool()
    for file in (_health(), _reflection("v1"), _reflection("v1alpha")):
        pool.AddSerializedFile(file.SerializeToString())

    def cls(name: str) -> Any:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))

    return Protocols(
        health_request=cls("grpc.health.v1.HealthCheckRequest"),
        health_response=cls("grpc.health.v1.HealthCheckResponse"),
        reflection={
            service: (cls(f"{package}.ServerReflectionRequest"), cls(f"{package}.ServerReflectionResponse"))
            for service, package in ((REFLECTION_V1, "grpc.reflection.v1"),
                                     (REFLECTION_V1ALPHA, "grpc.reflection.v1alpha"))
        },
    )
