"""``tf.Tensor`` on the wire: the same ``TensorProto`` as numpy arrays, plus bfloat16.

Decoding checks dtype, shape and byte count, views the request bytes as a numpy array
(``numpy.frombuffer``, no copy) and hands that to ``tf.convert_to_tensor``; TensorFlow
reuses the buffer when it is suitably aligned and copies it otherwise. TF tensors are
immutable, so either way the model cannot change the request. bfloat16 travels as raw
2-byte values with dtype ``"bfloat16"`` (numpy view through ``ml_dtypes``, which
TensorFlow depends on).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from blazerpc_core import InvalidArgument, RegistrationError
from blazerpc_core.schema.fields import BatchAxis, FieldMapping, TypeContext
from blazerpc_core.schema.tensors import (
    FrameworkTensorSpec,
    check_shape,
    checked_payload,
    parse_dims,
    split_annotation,
    tensor_mapping,
)

BFLOAT16 = "bfloat16"
WIRE_NAMES = (
    "float32", "float64", "float16", BFLOAT16, "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128",
)


@functools.cache
def numpy_dtype(name: str) -> np.dtype[Any]:
    """The numpy dtype for a wire name (bfloat16 through ml_dtypes)."""
    if name == BFLOAT16:
        import ml_dtypes

        bfloat16: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
        return bfloat16
    return np.dtype(name)


def wire_name(dtype: Any) -> str:
    """``tf.float32``, ``np.float32`` or ``"float32"`` → ``"float32"``; refuses what TF tensors cannot carry."""
    name = getattr(dtype, "name", None) if not isinstance(dtype, (str, type)) else None
    if name is None:
        if isinstance(dtype, str) and dtype == BFLOAT16:
            name = BFLOAT16
        else:
            try:
                name = np.dtype(dtype).name
            except TypeError:
                raise RegistrationError(f"{dtype!r} is not a tensor dtype") from None
    name = {"half": "float16", "float": "float32", "double": "float64"}.get(name, name)
    if name not in WIRE_NAMES:
        raise RegistrationError(f"dtype {name!r} cannot be served as a TF tensor (use one of {', '.join(WIRE_NAMES)})")
    return name


@dataclass(frozen=True)
class TFTensorSpec(FrameworkTensorSpec):
    """A declared TF tensor: accepted dtypes (None: any), shape (None: any rank).

    A single dtype is also what a returned tensor is cast to. ``batch_named`` marks a first
    dimension called ``"batch"``, which turns batching on; a bare ``tf.Tensor`` (any rank)
    may be batched when the model opts in.
    """

    kind: ClassVar[str] = "tf tensor"


class TFTensor:
    """Annotation for a TF tensor with a declared dtype and shape.

    ``TFTensor[tf.float32, "batch", 512]``: the dtype, then the dimensions as for
    ``TensorInput`` (see :func:`blazerpc_core.schema.tensors.parse_dims`). A bare
    ``tf.Tensor`` annotation takes any dtype and shape.
    """

    def __class_getitem__(cls, args: Any) -> TFTensorSpec:
        dtype, dims = split_annotation(args, what="TFTensor", example="TFTensor[tf.float32, 'batch', 512]")
        return TFTensorSpec((wire_name(dtype),), *parse_dims(dims))


# --- wire conversion -------------------------------------------------------------------


def tensor_from_wire(message: Any, spec: TFTensorSpec) -> Any:
    """An eager tensor with the request's values, after dtype, shape and length checks."""
    import tensorflow as tf

    name = message.dtype
    if not name:
        raise InvalidArgument("tensor has no dtype")
    try:
        name = wire_name(name)
    except RegistrationError:
        raise InvalidArgument(f"dtype {name!r} is not one a TF tensor can take ({', '.join(WIRE_NAMES)})") from None
    if spec.dtypes is not None and name not in spec.dtypes:
        raise InvalidArgument(f"dtype is {name}, expected {' or '.join(spec.dtypes)}")
    dtype = numpy_dtype(name)
    shape, data = checked_payload(message, spec.core, name, dtype.itemsize)
    return tf.convert_to_tensor(np.frombuffer(data, dtype=dtype).reshape(shape))


def tensor_to_wire(value: Any, spec: TFTensorSpec) -> dict[str, Any]:
    """``TensorProto`` fields for a returned tensor (cast to a single declared dtype)."""
    array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    array = np.asarray(array)
    if spec.dtypes is not None and len(spec.dtypes) == 1:
        want = numpy_dtype(spec.dtypes[0])
        if array.dtype != want:
            array = array.astype(want)
    check_shape(array.shape, spec.core, what="returned tensor")
    array = np.ascontiguousarray(array)
    return {"shape": array.shape, "dtype": array.dtype.name, "data": array.tobytes()}


# --- batching ----------------------------------------------------------------------------


def _rows(tensor: Any) -> int:
    return int(tensor.shape[0])


def _concat(parts: Sequence[Any]) -> Any:
    import tensorflow as tf

    return tf.concat(list(parts), axis=0)


def _split(tensor: Any, sizes: Sequence[int]) -> list[Any]:
    import tensorflow as tf

    return list(tf.split(tensor, list(sizes), axis=0))


def tf_axis(named: bool) -> BatchAxis:
    """Join requests with ``tf.concat`` and split results with ``tf.split`` along axis 0."""
    return BatchAxis(rows=_rows, concat=_concat, split=_split, named=named)


FRAMEWORK = "tensorflow"


def tf_mapping(context: TypeContext, spec: TFTensorSpec) -> FieldMapping:
    """A ``TensorProto`` field whose values are TF tensors."""
    mapping = tensor_mapping(
        context,
        spec.core,
        decode=lambda message: tensor_from_wire(message, spec),
        encode=lambda value: tensor_to_wire(value, spec),
        batch=tf_axis(spec.batch_named) if spec.batchable else None,
    )
    return replace(mapping, description=spec.describe(), extra={"tensor": spec.core, "framework": FRAMEWORK})
