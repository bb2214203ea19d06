"""What a type mapping produces: a protobuf field plus converters between wire and Python.

Converters work on plain Python structures (numbers, str, bytes, lists, dicts): protobuf
message constructors accept those for nested messages, so no code needs message classes
before the schema exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.descriptor_pb2 import FieldDescriptorProto

Converter = Callable[[Any], Any]

T = FieldDescriptorProto
#: Scalar protobuf types by the name used in .proto text.
SCALAR_NAMES: dict[int, str] = {
    T.TYPE_DOUBLE: "double",
    T.TYPE_FLOAT: "float",
    T.TYPE_INT64: "int64",
    T.TYPE_UINT64: "uint64",
    T.TYPE_INT32: "int32",
    T.TYPE_UINT32: "uint32",
    T.TYPE_BOOL: "bool",
    T.TYPE_STRING: "string",
    T.TYPE_BYTES: "bytes",
}


@dataclass(frozen=True)
class BatchAxis:
    """How values of one field join and split along their leading (batch) dimension.

    ``named`` is True when the type itself asks for batching (a tensor whose first
    dimension is called ``"batch"``); an unnamed dynamic dimension only makes batching
    possible.
    """

    rows: Callable[[Any], int]
    concat: Callable[[Sequence[Any]], Any]
    split: Callable[[Any, Sequence[int]], list[Any]]
    named: bool = False


@dataclass(frozen=True)
class FieldMapping:
    """One protobuf field and how to convert its values.

    ``decode`` turns the attribute read from a message into the Python value the model
    receives; ``encode`` turns a Python value into what the message constructor accepts.
    Any error raised on decode is answered INVALID_ARGUMENT naming the field (the client
    sent it); any error on encode is INTERNAL (the model returned a bad value).
    """

    type: int
    description: str
    type_name: str = ""
    repeated: bool = False
    optional: bool = False
    map_entry: tuple[FieldMapping, FieldMapping] | None = None
    decode: Converter | None = None
    encode: Converter | None = None
    batch: BatchAxis | None = None
    #: A message-typed input without a value is an error (unless the parameter has a default).
    required: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_message(self) -> bool:
        return self.type == T.TYPE_MESSAGE and self.map_entry is None


class TypeContext(Protocol):
    """What a ``blazerpc_map_type`` implementation can ask of the schema being built."""

    package: str

    def resolve(self, annotation: Any) -> FieldMapping:
        """Map ``annotation`` through the hook (for element types of containers)."""
        ...

    def declare_message(
        self, key: Any, name: str, fields: Sequence[tuple[str, FieldMapping]]
    ) -> str:
        """Define a top-level message once per ``key``; returns its ``.package.Name``."""
        ...

    def declare_enum(self, key: Any, name: str, values: Sequence[str]) -> str:
        """Define a top-level enum (values numbered from 0); returns its ``.package.Name``."""
        ...

    def has_message(self, key: Any) -> str | None:
        """The type name already declared for ``key``, if any (breaks recursion)."""
        ...


def identity(value: Any) -> Any:
    return value
