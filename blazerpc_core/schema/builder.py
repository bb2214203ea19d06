"""Build the app's single ``FileDescriptorProto``, its pool and its message classes.

That one descriptor is the source of truth for request/response encoding, the exported
``.proto`` text and server reflection.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pluggy
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from blazerpc_core.errors import RegistrationError
from blazerpc_core.registry import ModelRegistry, ModelSpec
from blazerpc_core.schema.builtin_types import is_record, record_fields
from blazerpc_core.schema.codec import MessageCodec
from blazerpc_core.schema.fields import FieldMapping, T

PACKAGE = "blazerpc"
FILE_NAME = "blaze_service.proto"
SERVICE = "InferenceService"
SERVICE_FULL_NAME = f"{PACKAGE}.{SERVICE}"


@dataclass
class MethodSchema:
    """Everything the server needs for one rpc, resolved once at build time."""

    rpc: str
    spec: ModelSpec
    request_type: Any
    response_type: Any
    input_fields: list[tuple[str, FieldMapping]]
    output_fields: list[tuple[str, FieldMapping]]
    inputs: MessageCodec
    outputs: MessageCodec
    #: Set when the function returns a dataclass/NamedTuple spread over several fields.
    output_record: type | None

    @property
    def path(self) -> str:
        return f"/{SERVICE_FULL_NAME}/{self.rpc}"

    def result_values(self, result: Any) -> list[Any]:
        """The response field values for one returned value."""
        if self.output_record is None:
            return [result] if self.output_fields else []
        return [getattr(result, name) for name, _ in self.output_fields]


@dataclass
class Schema:
    file: descriptor_pb2.FileDescriptorProto
    pool: descriptor_pool.DescriptorPool
    methods: list[MethodSchema]

    def proto_text(self) -> str:
        from blazerpc_core.schema.proto_text import render_proto

        return render_proto(self.file)


class SchemaBuilder:
    """Implements :class:`~blazerpc_core.schema.fields.TypeContext` while building the file."""

    package = PACKAGE

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm
        self.file = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, package=PACKAGE, syntax="proto3")
        self._declared: dict[Any, str] = {}
        self._names: dict[str, str] = {}

    # -- TypeContext ------------------------------------------------------------------

    def resolve(self, annotation: Any) -> FieldMapping:
        mapping = self._pm.hook.blazerpc_map_type(annotation=annotation, context=self)
        if mapping is None:
            raise RegistrationError(f"no type mapping for {_type_name(annotation)}")
        return mapping  # type: ignore[no-any-return]

    def has_message(self, key: Any) -> str | None:
        return self._declared.get(key)

    def declare_message(self, key: Any, name: str, fields: Sequence[tuple[str, FieldMapping]]) -> str:
        if key in self._declared:
            return self._declared[key]
        self._claim(name, f"type {_type_name(key)}")
        message = self.file.message_type.add(name=name)
        _add_fields(message, fields, self.package)
        type_name = f".{self.package}.{name}"
        self._declared[key] = type_name
        return type_name

    def declare_enum(self, key: Any, name: str, values: Sequence[str]) -> str:
        if key in self._declared:
            return self._declared[key]
        self._claim(name, f"enum {_type_name(key)}")
        enum = self.file.enum_type.add(name=name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
        type_name = f".{self.package}.{name}"
        self._declared[key] = type_name
        return type_name

    def _claim(self, name: str, owner: str) -> None:
        if name in self._names and self._names[name] != owner:
            raise RegistrationError(
                f"protobuf name {name!r} is used by both {self._names[name]} and {owner}; rename one"
            )
        self._names[name] = owner

    # -- models -------------------------------------------------------------------------

    def method_fields(
        self, spec: ModelSpec
    ) -> tuple[list[tuple[str, FieldMapping]], list[tuple[str, FieldMapping]], type | None]:
        """Map a model's inputs and output; errors name the model, parameter and type."""
        inputs = []
        for param, annotation, default in spec.inputs:
            mapping = self._resolve_for(spec, f"parameter {param!r}", annotation)
            if default is not inspect.Parameter.empty and not (mapping.repeated or mapping.is_message):
                # Presence lets an absent value mean the Python default rather than zero.
                mapping = dataclasses.replace(mapping, optional=True)
            inputs.append((param, mapping))
        output_record = spec.output if is_record(spec.output) else None
        if spec.output is None or spec.output is type(None):
            outputs = []
        elif output_record is not None:
            try:
                outputs = record_fields(output_record, self)
            except RegistrationError as exc:
                raise RegistrationError(f"model {spec.label}: return type: {exc}") from None
        else:
            outputs = [("result", self._resolve_for(spec, "return type", spec.output))]
        return inputs, outputs, output_record

    def _resolve_for(self, spec: ModelSpec, where: str, annotation: Any) -> FieldMapping:
        try:
            return self.resolve(annotation)
        except RegistrationError as exc:
            raise RegistrationError(
                f"model {spec.label}: {where} ({_type_name(annotation)}) is not supported: {exc}"
            ) from None


def build_schema(registry: ModelRegistry, pm: pluggy.PluginManager) -> Schema:
    """Map every model of ``registry`` and assemble the file, the pool and the codecs."""
    builder = SchemaBuilder(pm)
    planned = []
    for rpc, prefix, spec in registry.rpcs():
        inputs, outputs, output_record = builder.method_fields(spec)
        for suffix, fields in (("Request", inputs), ("Response", outputs)):
            builder._claim(prefix + suffix, f"rpc {rpc}")
            message = builder.file.message_type.add(name=prefix + suffix)
            _add_fields(message, fields, PACKAGE)
        planned.append((rpc, prefix, spec, inputs, outputs, output_record))
    service = builder.file.service.add(name=SERVICE)
    for rpc, prefix, spec, *_ in planned:
        service.method.add(
            name=rpc,
            input_type=f".{PACKAGE}.{prefix}Request",
            output_type=f".{PACKAGE}.{prefix}Response",
            client_streaming=spec.streaming.client_streams or None,
            server_streaming=spec.streaming.server_streams or None,
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(builder.file)
    methods = []
    for rpc, prefix, spec, inputs, outputs, output_record in planned:
        defaults = {
            name: default for name, _, default in spec.inputs if default is not inspect.Parameter.empty
        }
        methods.append(
            MethodSchema(
                rpc=rpc,
                spec=spec,
                request_type=_message_class(pool, f"{PACKAGE}.{prefix}Request"),
                response_type=_message_class(pool, f"{PACKAGE}.{prefix}Response"),
                input_fields=inputs,
                output_fields=outputs,
                inputs=MessageCodec(inputs, defaults=defaults, what="input"),
                outputs=MessageCodec(outputs, what="output"),
                output_record=output_record,
            )
        )
    return Schema(file=builder.file, pool=pool, methods=methods)


def _message_class(pool: descriptor_pool.DescriptorPool, full_name: str) -> Any:
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))


def _add_fields(
    message: descriptor_pb2.DescriptorProto, fields: Sequence[tuple[str, FieldMapping]], package: str
) -> None:
    optional_fields = []
    for number, (name, mapping) in enumerate(fields, start=1):
        field = message.field.add(name=name, number=number, type=mapping.type, json_name=_json_name(name))
        field.label = T.LABEL_REPEATED if mapping.repeated else T.LABEL_OPTIONAL
        if mapping.map_entry is not None:
            entry_name = "".join(p[:1].upper() + p[1:] for p in name.split("_")) + "Entry"
            entry = message.nested_type.add(name=entry_name)
            entry.options.map_entry = True
            _add_fields(entry, [("key", mapping.map_entry[0]), ("value", mapping.map_entry[1])], package)
            field.type_name = f".{package}.{message.name}.{entry_name}"
        elif mapping.type_name:
            field.type_name = mapping.type_name
        if mapping.optional and not mapping.is_message:
            field.proto3_optional = True
            optional_fields.append(field)
    for field in optional_fields:
        field.oneof_index = len(message.oneof_decl)
        message.oneof_decl.add(name=f"_{field.name}")


def _json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__qualname__
    return str(annotation)
