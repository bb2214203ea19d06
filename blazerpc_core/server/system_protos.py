"""Descriptors of the standard health and reflection protocols, built in our own pool.

Building them here, instead of importing generated modules, keeps the process-wide
default pool untouched: grpcio's health and reflection modules (which declare the same
symbols) can then live in the same process as a blazerpc server.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import descriptor_pb2

T = descriptor_pb2.FieldDescriptorProto
_Field = tuple[str, int, int, str] | tuple[str, int, int, str, str]  # name, number, type, label, [type name or oneof]

HEALTH_FILE = "grpc/health/v1/health.proto"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection")


def _message(
    file: descriptor_pb2.FileDescriptorProto,
    name: str,
    fields: Sequence[tuple[str, int, int, bool, str | None, int | None]],
    oneofs: Sequence[str] = (),
) -> descriptor_pb2.DescriptorProto:
    message = file.message_type.add(name=name)
    for oneof in oneofs:
        message.oneof_decl.add(name=oneof)
    for field_name, number, kind, repeated, type_name, oneof_index in fields:
        field = message.field.add(name=field_name, number=number, type=kind)
        field.label = T.LABEL_REPEATED if repeated else T.LABEL_OPTIONAL
        if type_name:
            field.type_name = f".{file.package}.{type_name}"
        if oneof_index is not None:
            field.oneof_index = oneof_index
    return message


def health_file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name=HEALTH_FILE, package="grpc.health.v1", syntax="proto3")
    _message(file, "HealthCheckRequest", [("service", 1, T.TYPE_STRING, False, None, None)])
    response = _message(
        file, "HealthCheckResponse",
        [("status", 1, T.TYPE_ENUM, False, "HealthCheckResponse.ServingStatus", None)],
    )
    status = response.enum_type.add(name="ServingStatus")
    for number, value in enumerate(("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")):
        status.value.add(name=value, number=number)
    service = file.service.add(name="Health")
    for method, streams in (("Check", False), ("Watch", True)):
        service.method.add(
            name=method, input_type=".grpc.health.v1.HealthCheckRequest",
            output_type=".grpc.health.v1.HealthCheckResponse", server_streaming=streams or None,
        )
    return file


def reflection_file(version: str) -> descriptor_pb2.FileDescriptorProto:
    package = f"grpc.reflection.{version}"
    file = descriptor_pb2.FileDescriptorProto(
        name=f"grpc/reflection/{version}/reflection.proto", package=package, syntax="proto3"
    )
    s, i32, msg = T.TYPE_STRING, T.TYPE_INT32, T.TYPE_MESSAGE
    _message(
        file, "ServerReflectionRequest",
        [("host", 1, s, False, None, None), ("file_by_filename", 3, s, False, None, 0),
         ("file_containing_symbol", 4, s, False, None, 0),
         ("file_containing_extension", 5, msg, False, "ExtensionRequest", 0),
         ("all_extension_numbers_of_type", 6, s, False, None, 0), ("list_services", 7, s, False, None, 0)],
        oneofs=["message_request"],
    )
    _message(file, "ExtensionRequest",
             [("containing_type", 1, s, False, None, None), ("extension_number", 2, i32, False, None, None)])
    _message(
        file, "ServerReflectionResponse",
        [("valid_host", 1, s, False, None, None),
         ("original_request", 2, msg, False, "ServerReflectionRequest", None),
         ("file_descriptor_response", 4, msg, False, "FileDescriptorResponse", 0),
         ("all_extension_numbers_response", 5, msg, False, "ExtensionNumberResponse", 0),
         ("list_services_response", 6, msg, False, "ListServiceResponse", 0),
         ("error_response", 7, msg, False, "ErrorResponse", 0)],
        oneofs=["message_response"],
    )
    _message(file, "FileDescriptorResponse", [("file_descriptor_proto", 1, T.TYPE_BYTES, True, None, None)])
    _message(file, "ExtensionNumberResponse",
             [("base_type_name", 1, s, False, None, None), ("extension_number", 2, i32, True, None, None)])
    _message(file, "ListServiceResponse", [("service", 1, msg, True, "ServiceResponse", None)])
    _message(file, "ServiceResponse", [("name", 1, s, False, None, None)])
    _message(file, "ErrorResponse",
             [("error_code", 1, i32, False, None, None), ("error_message", 2, s, False, None, None)])
    file.service.add(name="ServerReflection").method.add(
        name="ServerReflectionInfo",
        input_type=f".{package}.ServerReflectionRequest",
        output_type=f".{package}.ServerReflectionResponse",
        client_streaming=True, server_streaming=True,
    )
    return file
