"""``torch.Tensor`` on the wire: the same ``TensorProto`` as numpy arrays, plus bfloat16.

Decoding wraps the request's bytes with ``torch.frombuffer``: no copy. Those bytes
belong to an immutable ``bytes`` object, and torch has no read-only tensors, so an input
tensor must be treated as read-only: an in-place operation on it (``x.add_(1)``) is not
allowed; ``x.clone()`` first. torch warns about this once per process; the plugin takes
that warning at build time instead of on a client's first request.

bfloat16 (no numpy dtype) travels as raw 2-byte values with dtype ``"bfloat16"``.
"""

from __future__ import annotations

import functools
import warnings
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
FLOATS = ("float32", "float64", "float16", BFLOAT16)
_WIRE_NAMES = (
    "float32", "float64", "float16", BFLOAT16, "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128",
)


@functools.cache
def torch_dtypes() -> dict[str, Any]:
    """Wire dtype name → ``torch.dtype`` for every dtype this torch build has."""
    import torch

    return {name: getattr(torch, name) for name in _WIRE_NAMES if isinstance(getattr(torch, name, None), torch.dtype)}


def wire_name(dtype: Any) -> str:
    """``torch.float32``, ``np.float32`` or ``"float32"`` → ``"float32"``; refuses unknown names."""
    if isinstance(dtype, str) and dtype == BFLOAT16:
        return BFLOAT16
    if type(dtype).__name__ == "dtype" and type(dtype).__module__ == "torch":
        name = str(dtype).removeprefix("torch.")
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            raise RegistrationError(f"{dtype!r} is not a tensor dtype") from None
    if name not in _WIRE_NAMES:
        raise RegistrationError(
            f"dtype {name!r} cannot be served as a torch tensor (use one of {', '.join(_WIRE_NAMES)})"
        )
    return name


@dataclass(frozen=True)
class TorchTensorSpec(FrameworkTensorSpec):
    """A declared torch tensor: accepted dtypes (None: any), shape (None: any rank).

    A single dtype is also what a returned tensor is cast to. ``batch_named`` marks a first
    dimension called ``"batch"``, which turns batching on; a bare ``torch.Tensor`` (any
    rank) may be batched when the model opts in.
    """

    kind: ClassVar[str] = "torch tensor"


class TorchTensor:
    """Annotation for a torch tensor with a declared dtype and shape.

    ``TorchTensor[torch.float32, "batch", 512]``: the dtype, then the dimensions as for
    ``TensorInput`` (see :func:`blazerpc_core.schema.tensors.parse_dims`). A bare
    ``torch.Tensor`` annotation takes any dtype and shape.
    """

    def __class_getitem__(cls, args: Any) -> TorchTensorSpec:
        dtype, dims = split_annotation(args, what="TorchTensor", example="TorchTensor[torch.float32, 'batch', 512]")
        return TorchTensorSpec((wire_name(dtype),), *parse_dims(dims))


# --- wire conversion -------------------------------------------------------------------


def tensor_from_wire(message: Any, spec: TorchTensorSpec) -> Any:
    """A CPU tensor sharing the ``TensorProto``'s bytes, after dtype, shape and length checks."""
    import torch

    name = message.dtype
    if not name:
        raise InvalidArgument("tensor has no dtype")
    try:
        name = wire_name(name)
    except RegistrationError:
        raise InvalidArgument(f"dtype {name!r} is not one torch can take ({', '.join(torch_dtypes())})") from None
    if spec.dtypes is not None and name not in spec.dtypes:
        raise InvalidArgument(f"dtype is {name}, expected {' or '.join(spec.dtypes)}")
    dtype = torch_dtypes().get(name)
    if dtype is None:
        raise InvalidArgument(f"dtype {name} is not available in this torch build")
    shape, data = checked_payload(message, spec.core, name, dtype.itemsize)
    if not data:
        return torch.empty(shape, dtype=dtype)
    if len(data) == 1:
        # CPython shares one-byte bytes objects process-wide; never alias those.
        return torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape)
    return torch.frombuffer(data, dtype=dtype).reshape(shape)


def tensor_to_wire(value: Any, spec: TorchTensorSpec) -> dict[str, Any]:
    """``TensorProto`` fields for a returned tensor (moved to the CPU, cast to a single declared dtype)."""
    import torch

    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    tensor = tensor.detach()
    if spec.dtypes is not None and len(spec.dtypes) == 1:
        want = torch_dtypes()[spec.dtypes[0]]
        if tensor.dtype != want:
            tensor = tensor.to(want)
    check_shape(tuple(tensor.shape), spec.core, what="returned tensor")
    tensor = tensor.cpu().resolve_conj().resolve_neg().contiguous()
    if tensor.dtype == torch.bfloat16:
        data = tensor.view(torch.int16).numpy().tobytes()
        return {"shape": tuple(tensor.shape), "dtype": BFLOAT16, "data": data}
    array = tensor.numpy()
    return {"shape": array.shape, "dtype": array.dtype.name, "data": array.tobytes()}


# --- batching ----------------------------------------------------------------------------


def _rows(tensor: Any) -> int:
    return int(tensor.shape[0])


def _concat(parts: Sequence[Any]) -> Any:
    import torch

    return torch.cat(list(parts), dim=0)


def _split(tensor: Any, sizes: Sequence[int]) -> list[Any]:
    import torch

    return list(torch.split(tensor, list(sizes), dim=0))


def torch_axis(named: bool) -> BatchAxis:
    """Join requests with ``torch.cat`` and split results with ``torch.split`` along dim 0."""
    return BatchAxis(rows=_rows, concat=_concat, split=_split, named=named)


# --- the field mapping ------------------------------------------------------------------------


FRAMEWORK = "torch"


def torch_mapping(context: TypeContext, spec: TorchTensorSpec) -> FieldMapping:
    """A ``TensorProto`` field whose values are torch tensors."""
    _take_readonly_warning()
    mapping = tensor_mapping(
        context,
        spec.core,
        decode=lambda message: tensor_from_wire(message, spec),
        encode=lambda value: tensor_to_wire(value, spec),
        batch=torch_axis(spec.batch_named) if spec.batchable else None,
    )
    return replace(mapping, description=spec.describe(), extra={"tensor": spec.core, "framework": FRAMEWORK})


@functools.cache
def _take_readonly_warning() -> None:
    """torch warns once per process that a tensor over read-only memory is writable; see the module doc."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.frombuffer(b"\0\0", dtype=torch.uint8)
