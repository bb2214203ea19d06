"""Default plugin: scalars, bytes, lists, optionals, maps, enums, dataclasses, NamedTuples.

Every answer here is ``trylast``, so a third-party ``blazerpc_map_type`` wins over it.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import types
import typing
from collections.abc import Sequence
from typing import Any

from blazerpc_core.errors import InvalidArgument, RegistrationError
from blazerpc_core.markers import hookimpl
from blazerpc_core.schema.codec import MessageCodec
from blazerpc_core.schema.fields import BatchAxis, FieldMapping, T, TypeContext
from blazerpc_core.schema.records import is_namedtuple, record_fields

_SCALARS: dict[Any, FieldMapping] = {
    str: FieldMapping(T.TYPE_STRING, "string"),
    bytes: FieldMapping(T.TYPE_BYTES, "bytes"),
    bool: FieldMapping(T.TYPE_BOOL, "bool", encode=bool),
    int: FieldMapping(T.TYPE_INT64, "int64", encode=operator.index),
    float: FieldMapping(T.TYPE_DOUBLE, "double", encode=float),
}


@hookimpl(trylast=True)
def blazerpc_map_type(annotation: Any, context: TypeContext) -> FieldMapping | None:
    scalar = _SCALARS.get(annotation)
    if scalar is not None:
        return scalar
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return _optional(annotation, args, context)
    if origin in (list, Sequence, typing.Sequence) and len(args) == 1:
        return _repeated(args[0], context)
    if origin is dict and len(args) == 2:
        return _map(args[0], args[1], context)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum(annotation, context)
    if isinstance(annotation, type) and (
        dataclasses.is_dataclass(annotation) or is_namedtuple(annotation)
    ):
        return _record(annotation, context)
    return None


def _optional(annotation: Any, args: tuple[Any, ...], context: TypeContext) -> FieldMapping:
    present = [a for a in args if a is not type(None)]
    if len(present) != 1 or len(args) != 2:
        raise RegistrationError(
            f"{annotation} is a union; only `T | None` (an optional field) is supported"
        )
    inner = context.resolve(present[0])
    if inner.repeated:
        raise RegistrationError(
            f"{annotation}: a repeated or map field cannot be optional; use an empty "
            "list or dict instead of None"
        )
    return dataclasses.replace(inner, optional=True, required=False,
                               description=f"optional {inner.description}")


def _repeated(item: Any, context: TypeContext) -> FieldMapping:
    inner = context.resolve(item)
    if inner.repeated or inner.optional:
        raise RegistrationError(
            f"list[{_name(item)}] has no protobuf equivalent (a repeated field cannot hold "
            "lists, maps or optionals); use a tensor or a dataclass element"
        )
    decode_item, encode_item = inner.decode, inner.encode
    return dataclasses.replace(
        inner,
        repeated=True,
        required=False,
        description=f"repeated {inner.description}",
        decode=list if decode_item is None else (lambda v: [decode_item(x) for x in v]),
        encode=None if encode_item is None else (lambda v: [encode_item(x) for x in v]),
        batch=_LIST_AXIS,
    )


def _concat_lists(parts: Sequence[Any]) -> list[Any]:
    joined: list[Any] = []
    for part in parts:
        joined.extend(part)
    return joined


def _split_list(value: Any, sizes: Sequence[int]) -> list[Any]:
    out, start = [], 0
    for size in sizes:
        out.append(value[start : start + size])
        start += size
    return out


_LIST_AXIS = BatchAxis(rows=len, concat=_concat_lists, split=_split_list)


def _map(key: Any, value: Any, context: TypeContext) -> FieldMapping:
    if key not in (str, int):
        raise RegistrationError(f"dict[{_name(key)}, ...]: map keys must be str or int")
    key_mapping = context.resolve(key)
    value_mapping = context.resolve(value)
    if value_mapping.repeated or value_mapping.optional:
        raise RegistrationError(
            f"dict[{_name(key)}, {_name(value)}]: map values cannot be lists, maps or optionals"
        )
    decode_value, encode_value = value_mapping.decode, value_mapping.encode
    return FieldMapping(
        T.TYPE_MESSAGE,
        f"map<{key_mapping.description}, {value_mapping.description}>",
        repeated=True,
        map_entry=(key_mapping, value_mapping),
        decode=(lambda m: dict(m)) if decode_value is None
        else (lambda m: {k: decode_value(v) for k, v in m.items()}),
        encode=None if encode_value is None
        else (lambda d: {k: encode_value(v) for k, v in d.items()}),
    )


def _enum(cls: type[enum.Enum], context: TypeContext) -> FieldMapping:
    members = list(cls)
    prefix = _upper_snake(cls.__name__)
    type_name = context.declare_enum(cls, cls.__name__, [f"{prefix}_{m.name.upper()}" for m in members])
    index = {member: i for i, member in enumerate(members)}

    def decode(number: int) -> enum.Enum:
        if not 0 <= number < len(members):
            raise InvalidArgument(f"{number} is not a value of enum {cls.__name__}")
        return members[number]

    def encode(member: Any) -> int:
        return index[cls(member)]

    return FieldMapping(T.TYPE_ENUM, cls.__name__, type_name=type_name, decode=decode, encode=encode)


def _record(cls: type, context: TypeContext) -> FieldMapping:
    fields = record_fields(cls, context)
    existing = context.has_message(cls)
    type_name = existing or context.declare_message(cls, cls.__name__, fields)
    codec = MessageCodec(fields, what=f"{cls.__name__} field")
    names = codec.names

    def decode(message: Any) -> Any:
        return cls(*codec.decode(message))

    def encode(value: Any) -> dict[str, Any]:
        return codec.encode([getattr(value, n) for n in names])

    return FieldMapping(
        T.TYPE_MESSAGE, cls.__name__, type_name=type_name, decode=decode, encode=encode,
        required=True,
    )


def _upper_snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.upper())
    return "".join(out)


def _name(annotation: Any) -> str:
    return getattr(annotation, "__name__", repr(annotation))
