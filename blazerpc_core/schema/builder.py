"""Compile each model once, then assemble the served models into one ``FileDescriptorProto``.

:func:`compile_model` maps one model's annotations to fields through the type-mapping
hook (handed in as ``map_type``) and records the messages and enums those mappings
declare. :func:`assemble_schema` joins compiled models into the single file, pool and
message classes that serve them: the source of truth for request and response
encoding, the exported ``.proto`` text and server reflection. Assembling is cheap and
is redone whenever the set of served models changes; compiling is not repeated.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from blazerpc_core.errors import RegistrationError
from blazerpc_core.method import FILE_NAME as FILE_NAME
from blazerpc_core.method import PACKAGE, SERVICE, CompiledMethod, CompiledModel, Declarations, Fields, Schema
from blazerpc_core.method import SERVICE_FULL_NAME as SERVICE_FULL_NAME
from blazerpc_core.schema.codec import MessageCodec
from blazerpc_core.schema.fields import FieldMapping, T, TypeContext
from blazerpc_core.schema.records import is_record, record_fields
from blazerpc_core.spec import ModelSpec

#: The type-mapping hook: the first mapping that answers for an annotation, or None.
MapType = Callable[[Any, TypeContext], FieldMapping | None]


class UnmappedType(RegistrationError):
    """No type mapping answered for an annotation."""


class ModelTypes:
    """The :class:`~blazerpc_core.schema.fields.TypeContext` of one model being compiled."""

    package = PACKAGE

    def __init__(self, map_type: MapType) -> None:
        self._map_type = map_type
        self.declarations: Declarations = {}
        self._keys: dict[Any, str] = {}

    def resolve(self, annotation: Any) -> FieldMapping:
        mapping = self._map_type(annotation, self)
        if mapping is None:
            raise UnmappedType(f"no type mapping for {_type_name(annotation)}")
        return mapping

    def has_message(self, key: Any) -> str | None:
        return self._keys.get(key)

    def declare_message(self, key: Any, name: str, fields: Sequence[tuple[str, FieldMapping]]) -> str:
        if key in self._keys:
            return self._keys[key]
        message = descriptor_pb2.DescriptorProto(name=name)
        _add_fields(message, fields, PACKAGE)
        return self._declare(key, name, message)

    def declare_enum(self, key: Any, name: str, values: Sequence[str]) -> str:
        if key in self._keys:
            return self._keys[key]
        enum = descriptor_pb2.EnumDescriptorProto(name=name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
        return self._declare(key, name, enum)

    def _declare(self, key: Any, name: str, proto: Any) -> str:
        owner = self.declarations.get(name)
        if owner is not None and owner[0] != key:
            raise RegistrationError(
                f"protobuf name {name!r} is used by both {_type_name(owner[0])} and {_type_name(key)}; rename one"
            )
        self.declarations[name] = (key, proto)
        type_name = f".{PACKAGE}.{name}"
        self._keys[key] = type_name
        return type_name


def compile_model(spec: ModelSpec, map_type: MapType) -> CompiledModel:
    """Map ``spec``'s inputs and output; errors name the model, the parameter and the type."""
    types = ModelTypes(map_type)
    inputs: Fields = []
    for param, annotation, default in spec.inputs:
        mapping = _resolve_for(types, spec, f"parameter {param!r}", annotation)
        if default is not inspect.Parameter.empty and not (mapping.repeated or mapping.is_message):
            # Presence lets an absent value mean the Python default rather than zero.
            mapping = dataclasses.replace(mapping, optional=True)
        inputs.append((param, mapping))
    output_record = spec.output if is_record(spec.output) else None
    outputs: Fields
    if spec.output is None or spec.output is type(None):
        outputs = []
    elif output_record is not None:
        try:
            outputs = record_fields(output_record, types)
        except RegistrationError as exc:
            raise type(exc)(f"model {spec.label}: return type: {exc}") from None
    else:
        outputs = [("result", _resolve_for(types, spec, "return type", spec.output))]
    defaults = {name: default for name, _, default in spec.inputs if default is not inspect.Parameter.empty}
    return CompiledModel(
        spec=spec,
        input_fields=inputs,
        output_fields=outputs,
        inputs=MessageCodec(inputs, defaults=defaults, what="input"),
        outputs=MessageCodec(outputs, what="output"),
        output_record=output_record,
        declarations=types.declarations,
    )


def _resolve_for(types: ModelTypes, spec: ModelSpec, where: str, annotation: Any) -> FieldMapping:
    try:
        return types.resolve(annotation)
    except RegistrationError as exc:
        raise type(exc)(
            f"model {spec.label}: {where} ({_type_name(annotation)}) is not supported: {exc}"
        ) from None


#: (rpc name, message prefix, spec) for every rpc, as ``ModelRegistry.rpcs()`` lists them.
Rpcs = Sequence[tuple[str, str, ModelSpec]]
#: Renumbers the assembled file before it is served (may raise to refuse it): the schema lock,
#: :class:`blazerpc_core.schema.compat.Numbering`.
Renumber = Callable[[descriptor_pb2.FileDescriptorProto, Rpcs], object]


def assemble_schema(
    models: Mapping[tuple[str, str], CompiledModel], rpcs: Rpcs, number: Renumber | None = None
) -> Schema:
    """One file, pool and set of message classes serving ``rpcs`` with their compiled ``models``.

    ``models`` is keyed by (name, version). Declared types are shared between models when
    they were declared for the same key (a dataclass, ``TensorProto``); two different
    types with one protobuf name are refused, naming both. Fields are numbered by
    declaration order unless ``number`` (the schema lock) numbers them.
    """
    file = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, package=PACKAGE, syntax="proto3")
    owners: dict[str, Any] = {}

    def claim(name: str, owner: Any) -> bool:
        """True when ``name`` is new; False when ``owner`` already has it; raises for another owner."""
        if name in owners:
            if owners[name] != owner:
                raise RegistrationError(
                    f"protobuf name {name!r} is used by both {_type_name(owners[name])} and {_type_name(owner)}; "
                    "rename one"
                )
            return False
        owners[name] = owner
        return True

    planned = []
    for rpc, prefix, spec in rpcs:
        model = models[(spec.name, spec.version)]
        for name, (key, proto) in model.declarations.items():
            if claim(name, key):
                target = file.enum_type if isinstance(proto, descriptor_pb2.EnumDescriptorProto) else file.message_type
                target.add().CopyFrom(proto)
        for suffix, fields in (("Request", model.input_fields), ("Response", model.output_fields)):
            claim(prefix + suffix, f"rpc {rpc}")
            _add_fields(file.message_type.add(name=prefix + suffix), fields, PACKAGE)
        planned.append((rpc, prefix, model))
    service = file.service.add(name=SERVICE)
    for rpc, prefix, model in planned:
        shape = model.spec.streaming
        service.method.add(
            name=rpc,
            input_type=f".{PACKAGE}.{prefix}Request",
            output_type=f".{PACKAGE}.{prefix}Response",
            client_streaming=shape.client_streams or None,
            server_streaming=shape.server_streams or None,
        )
    if number is not None:
        number(file, rpcs)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    methods = [
        CompiledMethod(
            rpc=rpc,
            model=model,
            request_type=_message_class(pool, f"{PACKAGE}.{prefix}Request"),
            response_type=_message_class(pool, f"{PACKAGE}.{prefix}Response"),
        )
        for rpc, prefix, model in planned
    ]
    return Schema(file=file, pool=pool, methods=methods)


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
