"""The protocol's descriptors, ``grpc_service.proto`` and ``model_config.proto`` (package ``inference``), built in code.

Field names and numbers are those of the published KServe v2 / Triton definitions, so
any client compiled from them (``tritonclient``, KServe's SDK, Triton tools) reads our
messages. We build them with ``descriptor_pb2`` into a private pool rather than import
generated modules: those register the same symbols in protobuf's default pool, which
would clash with a client of the protocol living in the same process.

``model_config.proto`` declares the part of ``ModelConfig`` a blazerpc server fills in
(name, platform, batching, inputs, outputs, instance group, transaction policy); fields
it never sets are left out, which proto3 readers take as unset.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

T = descriptor_pb2.FieldDescriptorProto
PACKAGE = "inference"
SERVICE = "GRPCInferenceService"
SERVICE_FULL_NAME = f"{PACKAGE}.{SERVICE}"
SERVICE_FILE = "grpc_service.proto"
CONFIG_FILE = "model_config.proto"

_SCALARS = {
    "bool": T.TYPE_BOOL, "string": T.TYPE_STRING, "bytes": T.TYPE_BYTES, "int32": T.TYPE_INT32,
    "int64": T.TYPE_INT64, "uint32": T.TYPE_UINT32, "uint64": T.TYPE_UINT64, "float": T.TYPE_FLOAT,
    "double": T.TYPE_DOUBLE,
}


@dataclass(frozen=True)
class F:
    """A field: ``type`` is a scalar name, a message name, ``enum:Name`` or ``map<key, value>``."""

    name: str
    number: int
    type: str
    repeated: bool = False
    oneof: str | None = None


@dataclass(frozen=True)
class M:
    """A message with its fields, nested messages and enums (``(name, [value, ...])``, numbered from 0)."""

    name: str
    fields: Sequence[F] = ()
    nested: Sequence[M] = ()
    enums: Sequence[tuple[str, Sequence[str]]] = field(default_factory=tuple)


def _entry_name(field_name: str) -> str:
    return "".join(part.capitalize() for part in field_name.split("_")) + "Entry"


def _set_type(proto: Any, kind: str) -> None:
    if kind in _SCALARS:
        proto.type = _SCALARS[kind]
    elif kind.startswith("enum:"):
        proto.type = T.TYPE_ENUM
        proto.type_name = f".{PACKAGE}.{kind.removeprefix('enum:')}"
    else:
        proto.type = T.TYPE_MESSAGE
        proto.type_name = f".{PACKAGE}.{kind}"


def _add_message(container: Any, message: M, scope: str) -> None:
    proto = container.add(name=message.name)
    full = f"{scope}.{message.name}" if scope else message.name
    for enum_name, values in message.enums:
        enum = proto.enum_type.add(name=enum_name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
    for nested in message.nested:
        _add_message(proto.nested_type, nested, full)
    oneofs: list[str] = []
    for spec in message.fields:
        item = proto.field.add(name=spec.name, number=spec.number)
        item.label = T.LABEL_REPEATED if spec.repeated else T.LABEL_OPTIONAL
        if spec.type.startswith("map<"):
            key, value = (part.strip() for part in spec.type[4:-1].split(","))
            entry = proto.nested_type.add(name=_entry_name(spec.name))
            entry.options.map_entry = True
            for name, number, kind in (("key", 1, key), ("value", 2, value)):
                entry_field = entry.field.add(name=name, number=number, label=T.LABEL_OPTIONAL)
                _set_type(entry_field, kind)
            item.label = T.LABEL_REPEATED
            item.type = T.TYPE_MESSAGE
            item.type_name = f".{PACKAGE}.{full}.{entry.name}"
        else:
            _set_type(item, spec.type)
        if spec.oneof is not None:
            if spec.oneof not in oneofs:
                oneofs.append(spec.oneof)
                proto.oneof_decl.add(name=spec.oneof)
            item.oneof_index = oneofs.index(spec.oneof)


def _file(name: str, messages: Sequence[M], enums: Sequence[tuple[str, Sequence[str]]] = (),
          dependencies: Sequence[str] = ()) -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name=name, package=PACKAGE, syntax="proto3")
    file.dependency.extend(dependencies)
    for enum_name, values in enums:
        enum = file.enum_type.add(name=enum_name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
    for message in messages:
        _add_message(file.message_type, message, "")
    return file


DATA_TYPES = (
    "TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64", "TYPE_INT8",
    "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING", "TYPE_BF16",
)
#: ``ModelInstanceGroup.Kind`` value of a group that runs on the CPU.
KIND_CPU = 2


def model_config_file() -> descriptor_pb2.FileDescriptorProto:
    """``model_config.proto``: the part of ``ModelConfig`` a blazerpc server fills in."""
    reshape = M("ModelTensorReshape", [F("shape", 1, "int64", repeated=True)])
    model_input = M("ModelInput", [
        F("name", 1, "string"), F("data_type", 2, "enum:DataType"), F("format", 3, "enum:ModelInput.Format"),
        F("dims", 4, "int64", repeated=True), F("reshape", 5, "ModelTensorReshape"),
        F("is_shape_tensor", 6, "bool"), F("allow_ragged_batch", 7, "bool"), F("optional", 8, "bool"),
    ], enums=[("Format", ("FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"))])
    model_output = M("ModelOutput", [
        F("name", 1, "string"), F("data_type", 2, "enum:DataType"), F("dims", 3, "int64", repeated=True),
        F("label_filename", 4, "string"), F("reshape", 5, "ModelTensorReshape"), F("is_shape_tensor", 6, "bool"),
    ])
    instance_group = M("ModelInstanceGroup", [
        F("name", 1, "string"), F("count", 2, "int32"), F("gpus", 3, "int32", repeated=True),
        F("kind", 4, "enum:ModelInstanceGroup.Kind"), F("profile", 5, "string", repeated=True),
        F("passive", 7, "bool"), F("host_policy", 9, "string"),
    ], enums=[("Kind", ("KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"))])
    version_policy = M("ModelVersionPolicy", [
        F("latest", 1, "ModelVersionPolicy.Latest", oneof="policy_choice"),
        F("all", 2, "ModelVersionPolicy.All", oneof="policy_choice"),
        F("specific", 3, "ModelVersionPolicy.Specific", oneof="policy_choice"),
    ], nested=[
        M("Latest", [F("num_versions", 1, "uint32")]), M("All"),
        M("Specific", [F("versions", 1, "int64", repeated=True)]),
    ])
    queue_policy = M("ModelQueuePolicy", [
        F("timeout_action", 1, "enum:ModelQueuePolicy.TimeoutAction"),
        F("default_timeout_microseconds", 2, "uint64"), F("allow_timeout_override", 3, "bool"),
        F("max_queue_size", 4, "uint32"),
    ], enums=[("TimeoutAction", ("REJECT", "DELAY"))])
    dynamic_batching = M("ModelDynamicBatching", [
        F("preferred_batch_size", 1, "int32", repeated=True), F("max_queue_delay_microseconds", 2, "uint64"),
        F("preserve_ordering", 3, "bool"), F("priority_levels", 4, "uint64"),
        F("default_priority_level", 5, "uint64"), F("default_queue_policy", 6, "ModelQueuePolicy"),
        F("priority_queue_policy", 7, "map<uint64, ModelQueuePolicy>"),
    ])
    parameter = M("ModelParameter", [F("string_value", 1, "string")])
    transaction = M("ModelTransactionPolicy", [F("decoupled", 1, "bool")])
    config = M("ModelConfig", [
        F("name", 1, "string"), F("platform", 2, "string"), F("version_policy", 3, "ModelVersionPolicy"),
        F("max_batch_size", 4, "int32"), F("input", 5, "ModelInput", repeated=True),
        F("output", 6, "ModelOutput", repeated=True), F("instance_group", 7, "ModelInstanceGroup", repeated=True),
        F("dynamic_batching", 11, "ModelDynamicBatching", oneof="scheduling_choice"),
        F("parameters", 14, "map<string, ModelParameter>"), F("backend", 17, "string"),
        F("model_transaction_policy", 19, "ModelTransactionPolicy"), F("runtime", 25, "string"),
    ])
    return _file(CONFIG_FILE, [
        instance_group, reshape, model_input, model_output, version_policy, queue_policy, dynamic_batching,
        parameter, transaction, config,
    ], enums=[("DataType", DATA_TYPES)])


def _empty(*names: str) -> list[M]:
    return [M(name) for name in names]


def _named(*names: str) -> list[M]:
    """Messages whose only field is ``string name = 1``."""
    return [M(name, [F("name", 1, "string")]) for name in names]


def _name_version(*names: str) -> list[M]:
    return [M(name, [F("name", 1, "string"), F("version", 2, "string")]) for name in names]


def _repository_request(name: str) -> M:
    return M(name, [F("repository_name", 1, "string"), F("model_name", 2, "string"),
                    F("parameters", 3, "map<string, ModelRepositoryParameter>")])


def _settings(name: str, value: M) -> M:
    return M(name, [F("settings", 1, f"map<string, {name}.SettingValue>")], nested=[value])


def _duration_fields(*names: str, first: int = 1) -> list[F]:
    return [F(name, number, "StatisticDuration") for number, name in enumerate(names, start=first)]


#: rpc → (request, response, client streams, server streams), in the order of the published service.
RPCS: dict[str, tuple[str, str, bool, bool]] = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse", False, False),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse", False, False),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse", False, False),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse", False, False),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse", False, False),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse", False, False),
    "ModelStreamInfer": ("ModelInferRequest", "ModelStreamInferResponse", True, True),
    "ModelConfig": ("ModelConfigRequest", "ModelConfigResponse", False, False),
    "ModelStatistics": ("ModelStatisticsRequest", "ModelStatisticsResponse", False, False),
    "RepositoryIndex": ("RepositoryIndexRequest", "RepositoryIndexResponse", False, False),
    "RepositoryModelLoad": ("RepositoryModelLoadRequest", "RepositoryModelLoadResponse", False, False),
    "RepositoryModelUnload": ("RepositoryModelUnloadRequest", "RepositoryModelUnloadResponse", False, False),
    "SystemSharedMemoryStatus": ("SystemSharedMemoryStatusRequest", "SystemSharedMemoryStatusResponse", False, False),
    "SystemSharedMemoryRegister": ("SystemSharedMemoryRegisterRequest", "SystemSharedMemoryRegisterResponse",
                                   False, False),
    "SystemSharedMemoryUnregister": ("SystemSharedMemoryUnregisterRequest", "SystemSharedMemoryUnregisterResponse",
                                     False, False),
    "CudaSharedMemoryStatus": ("CudaSharedMemoryStatusRequest", "CudaSharedMemoryStatusResponse", False, False),
    "CudaSharedMemoryRegister": ("CudaSharedMemoryRegisterRequest", "CudaSharedMemoryRegisterResponse",
                                 False, False),
    "CudaSharedMemoryUnregister": ("CudaSharedMemoryUnregisterRequest", "CudaSharedMemoryUnregisterResponse",
                                   False, False),
    "TraceSetting": ("TraceSettingRequest", "TraceSettingResponse", False, False),
    "LogSettings": ("LogSettingsRequest", "LogSettingsResponse", False, False),
}


def grpc_service_file() -> descriptor_pb2.FileDescriptorProto:
    """``grpc_service.proto``: every message and rpc of ``inference.GRPCInferenceService``."""
    parameter_choice = [
        F("bool_param", 1, "bool", oneof="parameter_choice"), F("int64_param", 2, "int64", oneof="parameter_choice"),
        F("string_param", 3, "string", oneof="parameter_choice"),
    ]
    tensor_metadata = M("TensorMetadata", [
        F("name", 1, "string"), F("datatype", 2, "string"), F("shape", 3, "int64", repeated=True),
    ])
    parameters = "map<string, InferParameter>"
    messages = [
        *_empty("ServerLiveRequest"), M("ServerLiveResponse", [F("live", 1, "bool")]),
        *_empty("ServerReadyRequest"), M("ServerReadyResponse", [F("ready", 1, "bool")]),
        *_name_version("ModelReadyRequest"), M("ModelReadyResponse", [F("ready", 1, "bool")]),
        *_empty("ServerMetadataRequest"),
        M("ServerMetadataResponse", [
            F("name", 1, "string"), F("version", 2, "string"), F("extensions", 3, "string", repeated=True),
        ]),
        *_name_version("ModelMetadataRequest"),
        M("ModelMetadataResponse", [
            F("name", 1, "string"), F("versions", 2, "string", repeated=True), F("platform", 3, "string"),
            F("inputs", 4, "ModelMetadataResponse.TensorMetadata", repeated=True),
            F("outputs", 5, "ModelMetadataResponse.TensorMetadata", repeated=True),
        ], nested=[tensor_metadata]),
        M("InferParameter", [
            *parameter_choice, F("double_param", 4, "double", oneof="parameter_choice"),
            F("uint64_param", 5, "uint64", oneof="parameter_choice"),
        ]),
        M("InferTensorContents", [
            F("bool_contents", 1, "bool", repeated=True), F("int_contents", 2, "int32", repeated=True),
            F("int64_contents", 3, "int64", repeated=True), F("uint_contents", 4, "uint32", repeated=True),
            F("uint64_contents", 5, "uint64", repeated=True), F("fp32_contents", 6, "float", repeated=True),
            F("fp64_contents", 7, "double", repeated=True), F("bytes_contents", 8, "bytes", repeated=True),
        ]),
        M("ModelInferRequest", [
            F("model_name", 1, "string"), F("model_version", 2, "string"), F("id", 3, "string"),
            F("parameters", 4, parameters),
            F("inputs", 5, "ModelInferRequest.InferInputTensor", repeated=True),
            F("outputs", 6, "ModelInferRequest.InferRequestedOutputTensor", repeated=True),
            F("raw_input_contents", 7, "bytes", repeated=True),
        ], nested=[
            M("InferInputTensor", [
                F("name", 1, "string"), F("datatype", 2, "string"), F("shape", 3, "int64", repeated=True),
                F("parameters", 4, parameters), F("contents", 5, "InferTensorContents"),
            ]),
            M("InferRequestedOutputTensor", [F("name", 1, "string"), F("parameters", 2, parameters)]),
        ]),
        M("ModelInferResponse", [
            F("model_name", 1, "string"), F("model_version", 2, "string"), F("id", 3, "string"),
            F("parameters", 4, parameters),
            F("outputs", 5, "ModelInferResponse.InferOutputTensor", repeated=True),
            F("raw_output_contents", 6, "bytes", repeated=True),
        ], nested=[
            M("InferOutputTensor", [
                F("name", 1, "string"), F("datatype", 2, "string"), F("shape", 3, "int64", repeated=True),
                F("parameters", 4, parameters), F("contents", 5, "InferTensorContents"),
            ]),
        ]),
        M("ModelStreamInferResponse", [F("error_message", 1, "string"), F("infer_response", 2, "ModelInferResponse")]),
        *_name_version("ModelConfigRequest"), M("ModelConfigResponse", [F("config", 1, "ModelConfig")]),
        *_name_version("ModelStatisticsRequest"),
        M("StatisticDuration", [F("count", 1, "uint64"), F("ns", 2, "uint64")]),
        M("InferStatistics", _duration_fields(
            "success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss",
        )),
        M("InferResponseStatistics", _duration_fields(
            "compute_infer", "compute_output", "success", "fail", "empty_response", "cancel",
        )),
        M("InferBatchStatistics", [
            F("batch_size", 1, "uint64"),
            *_duration_fields("compute_input", "compute_infer", "compute_output", first=2),
        ]),
        M("MemoryUsage", [F("type", 1, "string"), F("id", 2, "int64"), F("byte_size", 3, "uint64")]),
        M("ModelStatistics", [
            F("name", 1, "string"), F("version", 2, "string"), F("last_inference", 3, "uint64"),
            F("inference_count", 4, "uint64"), F("execution_count", 5, "uint64"),
            F("inference_stats", 6, "InferStatistics"), F("batch_stats", 7, "InferBatchStatistics", repeated=True),
            F("memory_usage", 8, "MemoryUsage", repeated=True),
            F("response_stats", 9, "map<string, InferResponseStatistics>"),
        ]),
        M("ModelStatisticsResponse", [F("model_stats", 1, "ModelStatistics", repeated=True)]),
        M("ModelRepositoryParameter", [*parameter_choice, F("bytes_param", 4, "bytes", oneof="parameter_choice")]),
        M("RepositoryIndexRequest", [F("repository_name", 1, "string"), F("ready", 2, "bool")]),
        M("RepositoryIndexResponse", [F("models", 1, "RepositoryIndexResponse.ModelIndex", repeated=True)], nested=[
            M("ModelIndex", [
                F("name", 1, "string"), F("version", 2, "string"), F("state", 3, "string"), F("reason", 4, "string"),
            ]),
        ]),
        _repository_request("RepositoryModelLoadRequest"), *_empty("RepositoryModelLoadResponse"),
        _repository_request("RepositoryModelUnloadRequest"), *_empty("RepositoryModelUnloadResponse"),
        *_named("SystemSharedMemoryStatusRequest"),
        M("SystemSharedMemoryStatusResponse", [
            F("regions", 1, "map<string, SystemSharedMemoryStatusResponse.RegionStatus>"),
        ], nested=[M("RegionStatus", [
            F("name", 1, "string"), F("key", 2, "string"), F("offset", 3, "uint64"), F("byte_size", 4, "uint64"),
        ])]),
        M("SystemSharedMemoryRegisterRequest", [
            F("name", 1, "string"), F("key", 2, "string"), F("offset", 3, "uint64"), F("byte_size", 4, "uint64"),
        ]),
        *_empty("SystemSharedMemoryRegisterResponse"),
        *_named("SystemSharedMemoryUnregisterRequest"), *_empty("SystemSharedMemoryUnregisterResponse"),
        *_named("CudaSharedMemoryStatusRequest"),
        M("CudaSharedMemoryStatusResponse", [
            F("regions", 1, "map<string, CudaSharedMemoryStatusResponse.RegionStatus>"),
        ], nested=[M("RegionStatus", [
            F("name", 1, "string"), F("device_id", 2, "uint64"), F("byte_size", 3, "uint64"),
        ])]),
        M("CudaSharedMemoryRegisterRequest", [
            F("name", 1, "string"), F("raw_handle", 2, "bytes"), F("device_id", 3, "int64"),
            F("byte_size", 4, "uint64"),
        ]),
        *_empty("CudaSharedMemoryRegisterResponse"),
        *_named("CudaSharedMemoryUnregisterRequest"), *_empty("CudaSharedMemoryUnregisterResponse"),
        M("TraceSettingRequest", [
            F("settings", 1, "map<string, TraceSettingRequest.SettingValue>"), F("model_name", 2, "string"),
        ], nested=[M("SettingValue", [F("value", 1, "string", repeated=True)])]),
        _settings("TraceSettingResponse", M("SettingValue", [F("value", 1, "string", repeated=True)])),
        *(_settings(name, M("SettingValue", [
            F("bool_param", 1, "bool", oneof="parameter_choice"),
            F("uint32_param", 2, "uint32", oneof="parameter_choice"),
            F("string_param", 3, "string", oneof="parameter_choice"),
        ])) for name in ("LogSettingsRequest", "LogSettingsResponse")),
    ]
    file = _file(SERVICE_FILE, messages, dependencies=[CONFIG_FILE])
    service = file.service.add(name=SERVICE)
    for rpc, (request, response, client_streams, server_streams) in RPCS.items():
        service.method.add(
            name=rpc, input_type=f".{PACKAGE}.{request}", output_type=f".{PACKAGE}.{response}",
            client_streaming=client_streams or None, server_streaming=server_streams or None,
        )
    return file


class Messages:
    """Message classes of the protocol, from a pool of their own: ``messages.ModelInferRequest(...)``.

    Nested messages are reached with dots (``messages["ModelInferResponse.InferOutputTensor"]``).
    """

    def __init__(self) -> None:
        pool = descriptor_pool.DescriptorPool()
        pool.Add(model_config_file())
        pool.Add(grpc_service_file())
        self._pool = pool
        self._classes: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        found = self._classes.get(name)
        if found is None:
            found = self._classes[name] = message_factory.GetMessageClass(
                self._pool.FindMessageTypeByName(f"{PACKAGE}.{name}")
            )
        return found

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]


@functools.cache
def messages() -> Messages:
    """The process's one set of protocol message classes (building the pool costs a few milliseconds)."""
    return Messages()
