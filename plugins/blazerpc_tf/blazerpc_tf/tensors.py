"""``tf.Tensor`` on the wire: TensorFlow's primitives under the core's framework tensors.

The annotation, the request checks, casting, batching and the field mapping are the core's
(:class:`~blazerpc_core.plugin.FrameworkTensors`); this module only says how TensorFlow
does each step. Decoding views the request bytes as a numpy array (``numpy.frombuffer``,
no copy) and hands that to ``tf.convert_to_tensor``; TensorFlow reuses the buffer when it
is suitably aligned and copies it otherwise. TF tensors are immutable, so either way the
model cannot change the request. Results are encoded through numpy. bfloat16 travels as
raw 2-byte values with dtype ``"bfloat16"`` (numpy view through ``ml_dtypes``, which
TensorFlow depends on).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from blazerpc_core.plugin import FrameworkTensors, FrameworkTensorSpec

BFLOAT16 = "bfloat16"
#: Older TensorFlow spells some dtypes the C way.
_ALIASES = {"half": "float16", "float": "float32", "double": "float64"}


@functools.cache
def numpy_dtype(name: str) -> np.dtype[Any]:
    """The numpy dtype for a wire name (bfloat16 through ml_dtypes)."""
    if name == BFLOAT16:
        import ml_dtypes

        bfloat16: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
        return bfloat16
    return np.dtype(name)


@dataclass(frozen=True)
class TFTensorSpec(FrameworkTensorSpec):
    """A declared TF tensor: accepted dtypes (None: any), shape (None: any rank).

    A single dtype is also what a returned tensor is cast to. ``batch_named`` marks a first
    dimension called ``"batch"``, which turns batching on; a bare ``tf.Tensor`` (any rank)
    may be batched when the model opts in.
    """

    kind: ClassVar[str] = "tf tensor"


class TFTensors(FrameworkTensors):
    """TensorFlow's tensor primitives; returned values are encoded as numpy arrays."""

    framework = "tensorflow"
    spec_type = TFTensorSpec

    def tensor_type(self) -> Any | None:
        tf = sys.modules.get("tensorflow")
        return None if tf is None else tf.Tensor

    def native_name(self, dtype: Any) -> str | None:
        # tf.DType (and numpy dtype instances) carry their name; classes and strings go to numpy.
        if isinstance(dtype, (str, type)):
            return None
        name = getattr(dtype, "name", None)
        return _ALIASES.get(name, name) if isinstance(name, str) else None

    def from_bytes(self, data: bytes, dtype: str, shape: list[int]) -> Any:
        import tensorflow as tf

        return tf.convert_to_tensor(np.frombuffer(data, dtype=numpy_dtype(dtype)).reshape(shape))

    def to_tensor(self, value: Any) -> np.ndarray[Any, Any]:
        return np.asarray(value.numpy() if hasattr(value, "numpy") else value)

    def dtype_of(self, tensor: Any) -> str:
        name: str = tensor.dtype.name
        return name

    def cast(self, tensor: Any, dtype: str) -> Any:
        return tensor.astype(numpy_dtype(dtype))

    def shape_of(self, tensor: Any) -> tuple[int, ...]:
        return tuple(tensor.shape)

    def to_bytes(self, tensor: Any) -> bytes:
        array = np.ascontiguousarray(tensor)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        return array.tobytes()

    def concat(self, parts: Sequence[Any]) -> Any:
        import tensorflow as tf

        return tf.concat(list(parts), axis=0)

    def split(self, tensor: Any, sizes: Sequence[int]) -> list[Any]:
        import tensorflow as tf

        return list(tf.split(tensor, list(sizes), axis=0))


#: The tf plugin's one set of tensor primitives.
TF = TFTensors()


class TFTensor:
    """Annotation for a TF tensor with a declared dtype and shape.

    ``TFTensor[tf.float32, "batch", 512]``: the dtype (a ``tf.DType``, a numpy dtype or a
    name such as ``"bfloat16"``), then the dimensions as for ``TensorInput``. A bare
    ``tf.Tensor`` annotation takes any dtype and shape.
    """

    def __class_getitem__(cls, args: Any) -> FrameworkTensorSpec:
        return TF.annotation(args, what="TFTensor", example="TFTensor[tf.float32, 'batch', 512]")
