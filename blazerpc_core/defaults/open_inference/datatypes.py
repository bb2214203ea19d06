"""The protocol's tensor datatypes, and what each one is in numpy, on our wire and in a model config.

One row per datatype name of the Open Inference Protocol. ``wire`` is the dtype name our
own ``TensorProto`` carries (what tensor field decoders take, framework plugins' included):
BF16 has no numpy dtype, so it travels as raw 2-byte values named ``bfloat16``, exactly as
the torch and TensorFlow plugins read it. ``contents`` names the ``InferTensorContents``
field that carries the datatype's typed values (FP16 and BF16 have none: raw bytes only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Datatype:
    """One protocol datatype: its name, numpy dtype (None for BYTES and BF16), wire name and config enum."""

    name: str
    numpy: np.dtype[Any] | None
    wire: str
    itemsize: int
    #: ``inference.DataType`` number used in ``ModelConfig``.
    config: int
    #: The ``InferTensorContents`` field of its typed values, or "" when there is none.
    contents: str


def _row(name: str, wire: str, config: int, contents: str) -> Datatype:
    dtype = np.dtype(wire).newbyteorder("<") if wire not in ("bytes", "bfloat16") else None
    itemsize = dtype.itemsize if dtype is not None else (2 if wire == "bfloat16" else 0)
    return Datatype(name, dtype, wire, itemsize, config, contents)


BYTES = "BYTES"

DATATYPES: dict[str, Datatype] = {
    row.name: row
    for row in (
        _row("BOOL", "bool", 1, "bool_contents"),
        _row("UINT8", "uint8", 2, "uint_contents"),
        _row("UINT16", "uint16", 3, "uint_contents"),
        _row("UINT32", "uint32", 4, "uint_contents"),
        _row("UINT64", "uint64", 5, "uint64_contents"),
        _row("INT8", "int8", 6, "int_contents"),
        _row("INT16", "int16", 7, "int_contents"),
        _row("INT32", "int32", 8, "int_contents"),
        _row("INT64", "int64", 9, "int64_contents"),
        _row("FP16", "float16", 10, ""),
        _row("FP32", "float32", 11, "fp32_contents"),
        _row("FP64", "float64", 12, "fp64_contents"),
        _row(BYTES, "bytes", 13, "bytes_contents"),
        _row("BF16", "bfloat16", 14, ""),
    )
}

#: Protocol datatype by the dtype name of our wire (``float32`` → ``FP32``).
BY_WIRE: dict[str, Datatype] = {row.wire: row for row in DATATYPES.values()}

#: ``inference.DataType`` TYPE_INVALID: a tensor whose dtype the model leaves open.
ANY_DATATYPE = 0


def datatype(name: str) -> Datatype | None:
    """The row of a datatype name a client sent, or None when the protocol has no such datatype."""
    return DATATYPES.get(name)
