"""Give a graph's inputs and outputs the shape of a typed Python function.

The core builds an rpc from a function's signature: one request field per parameter and
one response field per member of a dataclass return type. A graph read from a file has
that information in its metadata instead, so this module turns graph names into field
names and attaches a matching ``__signature__`` and ``__annotations__`` to a callable.
"""

from __future__ import annotations

import dataclasses
import inspect
import keyword
import re
from collections.abc import Sequence
from typing import Any

_NOT_IDENT = re.compile(r"[^A-Za-z0-9_]+")


def field_names(raw: Sequence[str], *, fallback: str) -> list[str]:
    """Graph names as unique identifiers that are valid in Python and protobuf.

    ``input:0`` becomes ``input_0``; an empty or digit-led name gets ``fallback`` in
    front; clashes get a numeric suffix. The order of ``raw`` is kept.
    """
    out: list[str] = []
    for index, name in enumerate(raw):
        ident = _NOT_IDENT.sub("_", name).strip("_") or f"{fallback}_{index}"
        if ident[0].isdigit():
            ident = f"{fallback}_{ident}"
        if keyword.iskeyword(ident):
            ident += "_"
        candidate, n = ident, 2
        while candidate in out:
            candidate, n = f"{ident}_{n}", n + 1
        out.append(candidate)
    return out


def output_record(name: str, fields: Sequence[tuple[str, Any]]) -> type:
    """A frozen dataclass with one member per output, so each becomes a response field."""
    return dataclasses.make_dataclass(name, list(fields), frozen=True)


def attach_signature(target: Any, inputs: Sequence[tuple[str, Any]], output: Any) -> None:
    """Make ``target`` look, to ``inspect`` and ``typing``, like ``def f(<inputs>) -> output``."""
    params = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation)
        for name, annotation in inputs
    ]
    target.__signature__ = inspect.Signature(params, return_annotation=output)
    target.__annotations__ = {**dict(inputs), "return": output}
