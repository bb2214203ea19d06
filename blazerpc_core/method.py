"""A model compiled once for serving, and each rpc that serves it.

:class:`CompiledModel` is one model version with every annotation mapped to a protobuf
field (by the type-mapping hooks) and the messages and enums those mappings declared.
:class:`CompiledMethod` is one rpc of it, with the message classes of the schema it was
assembled into. A model has one or two rpcs (``PredictScale`` while it is the default
version, and ``PredictScaleV2`` when several versions are served); both share the
model's runner, so one batcher queues the calls of both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf import descriptor_pb2

from blazerpc_core.schema.fields import FieldMapping
from blazerpc_core.spec import ModelSpec

Fields = list[tuple[str, FieldMapping]]
#: A message or enum a type mapping declared, by its protobuf name: (the key it was declared
#: for, e.g. the dataclass; its descriptor).
Declarations = dict[str, tuple[Any, descriptor_pb2.DescriptorProto | descriptor_pb2.EnumDescriptorProto]]

PACKAGE = "blazerpc"
SERVICE = "InferenceService"
SERVICE_FULL_NAME = f"{PACKAGE}.{SERVICE}"
FILE_NAME = "blaze_service.proto"


class Codec(Protocol):
    """Reads and writes the fields of one message by name (see ``schema.codec.MessageCodec``)."""

    names: tuple[str, ...]

    def decode(self, message: Any) -> list[Any]:
        """Python values in field order; raises InvalidArgument for what the client got wrong."""
        ...

    def encode(self, values: Sequence[Any]) -> dict[str, Any]:
        """Message constructor keyword arguments for Python values in field order."""
        ...


@dataclass
class CompiledModel:
    """One model version, its annotations mapped to fields; the same whatever schema it joins."""

    spec: ModelSpec
    input_fields: Fields
    output_fields: Fields
    inputs: Codec
    outputs: Codec
    #: Set when the function returns a dataclass/NamedTuple spread over several fields.
    output_record: type | None
    declarations: Declarations = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.spec.label

    def result_values(self, result: Any) -> list[Any]:
        """The response field values for one returned value."""
        if self.output_record is None:
            return [result] if self.output_fields else []
        return [getattr(result, name) for name, _ in self.output_fields]


@dataclass
class CompiledMethod:
    """One rpc of a compiled model, with the message classes of the schema it belongs to."""

    rpc: str
    model: CompiledModel
    request_type: Any
    response_type: Any

    @property
    def path(self) -> str:
        return f"/{SERVICE_FULL_NAME}/{self.rpc}"

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    @property
    def inputs(self) -> Codec:
        return self.model.inputs

    @property
    def outputs(self) -> Codec:
        return self.model.outputs

    @property
    def input_fields(self) -> Fields:
        return self.model.input_fields

    @property
    def output_fields(self) -> Fields:
        return self.model.output_fields

    @property
    def output_record(self) -> type | None:
        return self.model.output_record

    def result_values(self, result: Any) -> list[Any]:
        return self.model.result_values(result)

    def response(self, result: Any) -> Any:
        """The response message for one returned value (raises on a value that does not fit)."""
        return self.response_type(**self.model.outputs.encode(self.model.result_values(result)))


@dataclass
class Schema:
    """The one ``FileDescriptorProto`` of the served models, its pool and its rpcs."""

    file: descriptor_pb2.FileDescriptorProto
    pool: Any
    methods: list[CompiledMethod]
