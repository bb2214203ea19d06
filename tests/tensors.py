"""Helpers to build and read TensorProto messages in tests."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_proto(pb2: Any, array: np.ndarray) -> Any:
    array = np.ascontiguousarray(array)
    return pb2.TensorProto(shape=list(array.shape), dtype=array.dtype.name, data=array.tobytes())


def from_proto(message: Any) -> np.ndarray:
    return np.frombuffer(message.data, dtype=np.dtype(message.dtype)).reshape(list(message.shape))
