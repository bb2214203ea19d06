"""``blazerpc/management.proto``: the messages and service of ``blazerpc.ManagementService``, built in our own pool.

Field numbers are a contract (DESIGN §10); new fields only ever get new numbers.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2

T = descriptor_pb2.FieldDescriptorProto
FILE = "blazerpc/management.proto"
PACKAGE = "blazerpc"
SERVICE = "ManagementService"
SERVICE_FULL_NAME = f"{PACKAGE}.{SERVICE}"

#: message → fields (name, number, type, repeated, message type name).
_MESSAGES: dict[str, list[tuple[str, int, int, bool, str | None]]] = {
    "ListModelsRequest": [],
    "ModelRef": [("name", 1, T.TYPE_STRING, False, None), ("version", 2, T.TYPE_STRING, False, None)],
    "LoadModelRequest": [("source", 1, T.TYPE_STRING, False, None)],
    "ModelStatus": [
        ("name", 1, T.TYPE_STRING, False, None), ("version", 2, T.TYPE_STRING, False, None),
        ("state", 3, T.TYPE_STRING, False, None), ("is_default", 4, T.TYPE_BOOL, False, None),
        ("source", 5, T.TYPE_STRING, False, None), ("error", 6, T.TYPE_STRING, False, None),
        ("rpcs", 7, T.TYPE_STRING, True, None),
    ],
    "ModelList": [("models", 1, T.TYPE_MESSAGE, True, "ModelStatus")],
    "FieldInfo": [
        ("name", 1, T.TYPE_STRING, False, None), ("type", 2, T.TYPE_STRING, False, None),
        ("optional", 3, T.TYPE_BOOL, False, None),
    ],
    "BatchingInfo": [
        ("batched", 1, T.TYPE_BOOL, False, None), ("policy", 2, T.TYPE_STRING, False, None),
        ("max_batch_size", 3, T.TYPE_INT64, False, None), ("batch_timeout_ms", 4, T.TYPE_DOUBLE, False, None),
        ("max_queue_size", 5, T.TYPE_INT64, False, None), ("max_concurrent_batches", 6, T.TYPE_INT64, False, None),
        ("max_latency_ms", 7, T.TYPE_DOUBLE, False, None),
    ],
    "ModelCounters": [
        ("calls", 1, T.TYPE_INT64, False, None), ("failures", 2, T.TYPE_INT64, False, None),
        ("inflight", 3, T.TYPE_INT64, False, None), ("load_seconds", 4, T.TYPE_DOUBLE, False, None),
        ("warmup_seconds", 5, T.TYPE_DOUBLE, False, None),
    ],
    "ModelDescription": [
        ("status", 1, T.TYPE_MESSAGE, False, "ModelStatus"), ("inputs", 2, T.TYPE_MESSAGE, True, "FieldInfo"),
        ("outputs", 3, T.TYPE_MESSAGE, True, "FieldInfo"), ("batching", 4, T.TYPE_MESSAGE, False, "BatchingInfo"),
        ("counters", 5, T.TYPE_MESSAGE, False, "ModelCounters"), ("streaming", 6, T.TYPE_STRING, False, None),
        ("description", 7, T.TYPE_STRING, False, None),
    ],
}
#: rpc → (request, response).
RPCS: dict[str, tuple[str, str]] = {
    "ListModels": ("ListModelsRequest", "ModelList"),
    "DescribeModel": ("ModelRef", "ModelDescription"),
    "LoadModel": ("LoadModelRequest", "ModelList"),
    "UnloadModel": ("ModelRef", "ModelList"),
    "ReloadModel": ("ModelRef", "ModelList"),
    "SetDefaultVersion": ("ModelRef", "ModelStatus"),
}
#: The rpcs that change what is served (refused without --model-control explicit or poll).
MUTATING = frozenset({"LoadModel", "UnloadModel", "ReloadModel", "SetDefaultVersion"})


def management_file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name=FILE, package=PACKAGE, syntax="proto3")
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for field_name, number, kind, repeated, type_name in fields:
            field = message.field.add(name=field_name, number=number, type=kind)
            field.label = T.LABEL_REPEATED if repeated else T.LABEL_OPTIONAL
            if type_name:
                field.type_name = f".{PACKAGE}.{type_name}"
    service = file.service.add(name=SERVICE)
    for rpc, (request, response) in RPCS.items():
        service.method.add(name=rpc, input_type=f".{PACKAGE}.{request}", output_type=f".{PACKAGE}.{response}")
    return file
