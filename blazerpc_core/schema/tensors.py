"""Tensors on the wire: ``TensorProto``, ``TensorInput``/``TensorOutput`` and numpy arrays.

``TensorProto { repeated int64 shape = 1; string dtype = 2; bytes data = 3; }`` carries
C-order little-endian bytes. Decoding is zero-copy (``numpy.frombuffer``) after checking
dtype, rank, fixed dimensions and that the byte count matches the shape. Framework
plugins read their own annotations with :func:`split_annotation` and :func:`parse_dims`
into a :class:`FrameworkTensorSpec` subclass, and reuse :func:`tensor_mapping` with their
own converters.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from blazerpc_core.errors import InvalidArgument, RegistrationError
from blazerpc_core.hookspecs import hookimpl
from blazerpc_core.schema.fields import BatchAxis, Converter, FieldMapping, T, TypeContext

TENSOR_MESSAGE = "TensorProto"
Dim = int | None  # None: any size
BATCH = "batch"


def split_annotation(args: Any, *, what: str, example: str) -> tuple[Any, tuple[Any, ...]]:
    """``(dtype, dims)`` from the subscript of ``what[dtype, *dims]``; an empty one is refused with ``example``."""
    if not isinstance(args, tuple):
        args = (args,)
    if not args:
        raise RegistrationError(f"{what} needs a dtype, e.g. {example}")
    return args[0], args[1:]


def parse_dims(dims: Sequence[Any]) -> tuple[tuple[Dim, ...] | None, bool]:
    """The ``*dims`` of a ``Tensor[dtype, *dims]`` annotation as ``(shape, batch_named)``.

    An int is a fixed size; ``None``, ``-1`` or a name is any size; no dims at all is any
    rank (shape None); a first dimension named ``"batch"`` sets ``batch_named``. Anything
    else raises :class:`RegistrationError`. Framework plugins parse their annotations with it.
    """
    shape: list[Dim] = []
    for dim in dims:
        if isinstance(dim, bool) or not isinstance(dim, (int, str, type(None))):
            raise RegistrationError(f"tensor dimension {dim!r} must be an int, a name or None")
        if isinstance(dim, int) and dim < -1:
            raise RegistrationError(f"tensor dimension {dim} is negative (use -1 or None for any size)")
        shape.append(dim if isinstance(dim, int) and dim >= 0 else None)
    batch_named = len(dims) > 0 and dims[0] == BATCH
    return (tuple(shape) if dims else None), batch_named


def describe_dims(shape: Sequence[Dim] | None, batch_named: bool) -> str:
    """``[batch, 512]``, ``[?, 3]`` or ``[...]`` (any rank): the dims part of a tensor's description."""
    if shape is None:
        return "[...]"
    dims = [(BATCH if i == 0 and batch_named else "?") if d is None else str(d) for i, d in enumerate(shape)]
    return f"[{', '.join(dims)}]"


@dataclass(frozen=True)
class TensorSpec:
    """A declared tensor: dtype (None: any), shape (None: any rank), first dim named ``batch``."""

    dtype: np.dtype[Any] | None
    shape: tuple[Dim, ...] | None
    batch_named: bool = False
    output: bool = False

    @property
    def batchable(self) -> bool:
        return self.shape is not None and len(self.shape) > 0 and self.shape[0] is None

    def describe(self) -> str:
        dtype = self.dtype.name if self.dtype is not None else "any"
        return f"tensor {dtype}{describe_dims(self.shape, self.batch_named)}"


@dataclass(frozen=True)
class FrameworkTensorSpec:
    """A framework plugin's declared tensor: wire dtype names (None: any), shape (None: any rank).

    A single dtype is also what a returned tensor is cast to; ``batch_named`` marks a first
    dimension called ``"batch"``, which turns batching on. Plugins subclass it, naming
    their tensors in ``kind`` (``"torch tensor"``), for their own annotation.
    """

    kind: ClassVar[str] = "tensor"
    dtypes: tuple[str, ...] | None
    shape: tuple[Dim, ...] | None
    batch_named: bool = False

    @property
    def core(self) -> TensorSpec:
        """The dtype-less core spec, for the shared shape checks."""
        return TensorSpec(None, self.shape, self.batch_named)

    @property
    def batchable(self) -> bool:
        """Rank unknown counts: a bare framework tensor may be batched when the model opts in."""
        return self.shape is None or self.core.batchable

    def describe(self) -> str:
        dtype = "any" if self.dtypes is None else "|".join(self.dtypes)
        return f"{self.kind} {dtype}{describe_dims(self.shape, self.batch_named)}"


def _spec_from_args(args: Any, *, output: bool) -> TensorSpec:
    first, dims = split_annotation(args, what="a tensor annotation", example="TensorInput[np.float32, 'batch', 512]")
    try:
        dtype = np.dtype(first)
    except TypeError as exc:
        raise RegistrationError(f"{first!r} is not a numpy dtype") from exc
    return TensorSpec(dtype, *parse_dims(dims), output=output)


class TensorInput:
    """Annotation for an input tensor: ``TensorInput[np.float32, "batch", 512]``.

    The first argument is the dtype, the rest the shape: an int is a fixed size, ``None``,
    ``-1`` or a name is any size, and a first dimension named ``"batch"`` turns batching on.
    The function receives a read-only ``numpy.ndarray``.
    """

    def __class_getitem__(cls, args: Any) -> TensorSpec:
        return _spec_from_args(args, output=False)


class TensorOutput:
    """Annotation for an output tensor, same form as :class:`TensorInput`.

    The returned array is cast to the declared dtype and its fixed dimensions are checked.
    """

    def __class_getitem__(cls, args: Any) -> TensorSpec:
        return _spec_from_args(args, output=True)


# --- wire conversion ------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def wire_dtype(name: str) -> np.dtype[Any]:
    """The little-endian numpy dtype for a dtype name sent on the wire (cached: per-request path)."""
    try:
        dtype = np.dtype(name)
    except TypeError:
        raise InvalidArgument(f"unknown dtype {name!r}") from None
    if dtype.hasobject or dtype.kind in "OUSVMm":
        raise InvalidArgument(f"dtype {name!r} cannot be sent as raw bytes")
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


def check_shape(shape: Sequence[int], spec: TensorSpec, *, what: str = "tensor") -> None:
    """Raise :class:`InvalidArgument` unless ``shape`` fits ``spec`` (rank and fixed dims)."""
    if spec.shape is None:
        return
    if len(shape) != len(spec.shape):
        raise InvalidArgument(
            f"{what} has rank {len(shape)} (shape {list(shape)}), expected rank "
            f"{len(spec.shape)} ({spec.describe()})"
        )
    for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
        if want is not None and got != want:
            raise InvalidArgument(
                f"{what} dimension {axis} is {got}, expected {want} ({spec.describe()}); "
                f"got shape {list(shape)}"
            )


def checked_payload(message: Any, spec: TensorSpec, dtype_name: str, itemsize: int) -> tuple[list[int], bytes]:
    """A ``TensorProto``'s shape and bytes, once the shape fits ``spec`` and the byte count the shape.

    Shared by every decoder (numpy here, framework tensors in plugins) after it has
    resolved the dtype; raises :class:`InvalidArgument` naming what is wrong.
    """
    shape = list(message.shape)
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"negative dimension in shape {shape}")
    check_shape(shape, spec)
    data = message.data
    expected = math.prod(shape) * itemsize
    if len(data) != expected:
        raise InvalidArgument(f"data has {len(data)} bytes, but shape {shape} of {dtype_name} needs {expected}")
    return shape, data


def array_from_wire(message: Any, spec: TensorSpec) -> np.ndarray[Any, Any]:
    """Decode a ``TensorProto`` into a read-only array that shares the message's bytes."""
    if not message.dtype:
        raise InvalidArgument("tensor has no dtype")
    dtype = wire_dtype(message.dtype)
    if spec.dtype is not None and dtype != spec.dtype:
        raise InvalidArgument(f"dtype is {dtype.name}, expected {spec.dtype.name}")
    shape, data = checked_payload(message, spec, dtype.name, dtype.itemsize)
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def array_to_wire(array: Any, spec: TensorSpec | None = None) -> dict[str, Any]:
    """Encode an array-like as ``TensorProto`` constructor arguments (C order, little endian)."""
    arr = np.asarray(array)
    if spec is not None and spec.dtype is not None and arr.dtype != spec.dtype:
        arr = arr.astype(spec.dtype)
    if spec is not None:
        check_shape(arr.shape, spec, what="returned tensor")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return {"shape": arr.shape, "dtype": arr.dtype.name, "data": arr.tobytes()}


# --- the field mapping ------------------------------------------------------------------


def declare_tensor_message(context: TypeContext) -> str:
    """Declare ``TensorProto`` in the schema (once) and return its type name."""
    existing = context.has_message(TENSOR_MESSAGE)
    if existing:
        return existing
    return context.declare_message(
        TENSOR_MESSAGE,
        TENSOR_MESSAGE,
        [
            ("shape", FieldMapping(T.TYPE_INT64, "int64", repeated=True)),
            ("dtype", FieldMapping(T.TYPE_STRING, "string")),
            ("data", FieldMapping(T.TYPE_BYTES, "bytes")),
        ],
    )


def tensor_mapping(
    context: TypeContext,
    spec: TensorSpec,
    *,
    decode: Converter,
    encode: Converter,
    batch: BatchAxis | None,
) -> FieldMapping:
    """A ``TensorProto`` field with the given converters; for framework plugins too."""
    return FieldMapping(
        T.TYPE_MESSAGE,
        spec.describe(),
        type_name=declare_tensor_message(context),
        decode=decode,
        encode=encode,
        batch=batch,
        required=True,
        extra={"tensor": spec},
    )


def _split_array(value: Any, sizes: Sequence[int]) -> list[Any]:
    bounds = np.cumsum(sizes)[:-1]
    return list(np.split(np.asarray(value), bounds))


def numpy_axis(named: bool) -> BatchAxis:
    return BatchAxis(rows=len, concat=np.concatenate, split=_split_array, named=named)


def _numpy_mapping(spec: TensorSpec, context: TypeContext) -> FieldMapping:
    decode: Callable[[Any], Any] = lambda m: array_from_wire(m, spec)
    encode: Callable[[Any], Any] = lambda a: array_to_wire(a, spec)
    batch = numpy_axis(spec.batch_named) if spec.batchable else None
    return tensor_mapping(context, spec, decode=decode, encode=encode, batch=batch)


@hookimpl(trylast=True)
def blazerpc_map_type(annotation: Any, context: TypeContext) -> FieldMapping | None:
    if isinstance(annotation, TensorSpec):
        return _numpy_mapping(annotation, context)
    if annotation is np.ndarray or getattr(annotation, "__origin__", None) is np.ndarray:
        return _numpy_mapping(TensorSpec(None, None), context)
    return None
