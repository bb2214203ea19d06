"""Dataclasses and NamedTuples: types whose members become the fields of a message.

Used by the schema builder (a record returned by a model spreads over the response's
fields) and by the built-in type mappings (a record parameter is a nested message).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from blazerpc_core.schema.fields import FieldMapping, TypeContext


def is_record(annotation: Any) -> bool:
    """True for dataclasses and NamedTuples, whose members become separate fields."""
    return isinstance(annotation, type) and (dataclasses.is_dataclass(annotation) or is_namedtuple(annotation))


def is_namedtuple(cls: type) -> bool:
    return issubclass(cls, tuple) and hasattr(cls, "_fields")


def record_fields(cls: type, context: TypeContext) -> list[tuple[str, FieldMapping]]:
    """The fields of a dataclass or NamedTuple, each mapped through the type-mapping hook."""
    hints = typing.get_type_hints(cls)
    if dataclasses.is_dataclass(cls):
        names = [f.name for f in dataclasses.fields(cls)]
    else:
        names = list(getattr(cls, "_fields", ()))
    return [(name, context.resolve(hints[name])) for name in names]
