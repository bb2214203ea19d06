"""The public API for plugin authors: everything a hook signature mentions, and the helpers plugins share.

Plugins import from here (and from ``blazerpc_core``), never from internal modules, so the
core can move its insides without breaking them. The framework plugins (torch, tf, onnx)
and blazerpc-otel use nothing else; a test checks it.

* hooks: :data:`hookimpl`, and the types hook signatures mention (:class:`ModelSpec`,
  :class:`ServeSettings`, :class:`FieldMapping`, :class:`TypeContext`,
  :class:`BatchingPolicy`, :class:`ServerContext`, :class:`CallContext`, :class:`Middleware`);
* type mappings: :class:`BatchAxis`, protobuf field types ``T``, and the tensor helpers
  (``TensorProto`` fields, dtype names, shape and byte-count checks);
* framework tensors: :class:`FrameworkTensors` (a framework's primitives in, annotation,
  checks, batching and field mapping out), :class:`FrameworkTensorSpec`, :data:`FRAMEWORK_DTYPES`;
* model files: :func:`model_file`, :func:`file_model_name`, :func:`file_model_spec` and the signature helpers
  (:func:`field_names`, :func:`output_record`, :func:`attach_signature`);
* batching: :class:`Runner`, :class:`ModelInvoker`, :class:`Batcher`, :class:`DispatchRule`,
  :class:`BatchConfig`, :class:`CompiledModel`, :func:`batch_plan`;
* errors: every error type, each with its gRPC status.
"""

from __future__ import annotations

from grpclib.const import Status

from blazerpc_core.call import CallContext, CallNext, Middleware
from blazerpc_core.context import ServerContext
from blazerpc_core.errors import (
    BlazeError,
    Cancelled,
    DeadlineExceeded,
    InvalidArgument,
    PermissionDenied,
    PluginError,
    RegistrationError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    client_text,
)
from blazerpc_core.markers import hookimpl
from blazerpc_core.method import CompiledModel
from blazerpc_core.model_files import file_model_name, file_model_spec, model_file
from blazerpc_core.naming import pascal_case
from blazerpc_core.runtime.batcher import Batcher
from blazerpc_core.runtime.direct import DirectRunner
from blazerpc_core.runtime.dispatch import BatchConfig, BatchState, DispatchRule, SizeOrTimeout
from blazerpc_core.runtime.events import BatchEvents, BatchObserver
from blazerpc_core.runtime.plan import BatchPlan, batch_plan
from blazerpc_core.runtime.policy import BatchingPolicy, Enter, ModelInvoker, Runner
from blazerpc_core.schema.fields import SCALAR_NAMES, BatchAxis, Converter, FieldMapping, T, TypeContext
from blazerpc_core.schema.framework_tensors import FRAMEWORK_DTYPES, FrameworkTensors, FrameworkTensorSpec
from blazerpc_core.schema.records import is_record
from blazerpc_core.schema.signature import attach_signature, field_names, output_record
from blazerpc_core.schema.tensors import (
    BATCH,
    MAX_RANK,
    WIRE_DTYPES,
    TensorInput,
    TensorOutput,
    TensorSpec,
    array_from_wire,
    array_to_wire,
    check_shape,
    checked_payload,
    declare_tensor_message,
    describe_dims,
    numpy_axis,
    parse_dims,
    split_annotation,
    tensor_mapping,
)
from blazerpc_core.settings import BatchSettings, ServeSettings
from blazerpc_core.spec import Loaded, ModelSpec, Streaming, make_spec

__all__ = [
    "BATCH",
    "FRAMEWORK_DTYPES",
    "MAX_RANK",
    "SCALAR_NAMES",
    "WIRE_DTYPES",
    "BatchAxis",
    "BatchConfig",
    "BatchEvents",
    "BatchObserver",
    "BatchPlan",
    "BatchSettings",
    "BatchState",
    "Batcher",
    "BatchingPolicy",
    "BlazeError",
    "CallContext",
    "CallNext",
    "Cancelled",
    "CompiledModel",
    "Converter",
    "DeadlineExceeded",
    "DirectRunner",
    "DispatchRule",
    "Enter",
    "FieldMapping",
    "FrameworkTensorSpec",
    "FrameworkTensors",
    "InvalidArgument",
    "Loaded",
    "Middleware",
    "ModelInvoker",
    "ModelSpec",
    "PermissionDenied",
    "PluginError",
    "RegistrationError",
    "ResourceExhausted",
    "Runner",
    "ServeSettings",
    "ServerContext",
    "SizeOrTimeout",
    "Status",
    "Streaming",
    "T",
    "TensorInput",
    "TensorOutput",
    "TensorSpec",
    "TypeContext",
    "Unauthenticated",
    "Unavailable",
    "array_from_wire",
    "array_to_wire",
    "attach_signature",
    "batch_plan",
    "check_shape",
    "checked_payload",
    "client_text",
    "declare_tensor_message",
    "describe_dims",
    "field_names",
    "file_model_name",
    "file_model_spec",
    "hookimpl",
    "is_record",
    "make_spec",
    "model_file",
    "numpy_axis",
    "output_record",
    "parse_dims",
    "pascal_case",
    "split_annotation",
    "tensor_mapping",
]
