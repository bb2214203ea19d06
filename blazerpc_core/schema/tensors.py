"""Tensors on the wire: ``TensorProto``, ``TensorInput``/``TensorOutput`` and numpy arrays.

``TensorProto { repeated int64 shape = 1; string dtype = 2; bytes data = 3; }`` carries
C-order little-endian bytes of one of the :data:`WIRE_DTYPES`. Decoding is zero-copy
(``numpy.frombuffer``) after checking dtype, rank (at most :data:`MAX_RANK`), fixed
dimensions and that the byte count matches the shape. Everything here reads client input,
so errors quote it only through :func:`~blazerpc_core.errors.client_text`. Framework
tensors (torch, TensorFlow) build on these checks in
:mod:`blazerpc_core.schema.framework_tensors`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from blazerpc_core.errors import InvalidArgument, RegistrationError, client_text
from blazerpc_core.schema.fields import BatchAxis, Converter, FieldMapping, T, TypeContext

TENSOR_MESSAGE = "TensorProto"
Dim = int | None  # None: any size
BATCH = "batch"

#: The dtype names a ``TensorProto`` may carry, and the only ones a decoder accepts. An
#: allow-list rather than ``numpy.dtype(name)``: numpy also parses byte-order prefixes
#: (``">f4"`` would be misread, the data being little-endian by contract), aliases,
#: structured and sub-array specs, and raises ValueError or SyntaxError on others.
WIRE_DTYPES: tuple[str, ...] = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128",
)
_WIRE: dict[str, np.dtype[Any]] = {name: np.dtype(name).newbyteorder("<") for name in WIRE_DTYPES}

#: The most dimensions a tensor may have (numpy's own limit). Checked before a client's
#: shape is looked at further, so a 100 000-dimension shape costs nothing to refuse.
MAX_RANK = 64

#: The largest byte count an array can address; bounds the shape of an empty tensor too.
_ADDRESSABLE = sys.maxsize


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


def _spec_from_args(args: Any, *, output: bool) -> TensorSpec:
    first, dims = split_annotation(args, what="a tensor annotation", example="TensorInput[np.float32, 'batch', 512]")
    try:
        dtype = np.dtype(first)
    except TypeError as exc:
        raise RegistrationError(f"{first!r} is not a numpy dtype") from exc
    if dtype.name not in _WIRE:
        raise RegistrationError(f"dtype {dtype} cannot travel in a TensorProto (use one of {', '.join(WIRE_DTYPES)})")
    return TensorSpec(_WIRE[dtype.name], *parse_dims(dims), output=output)


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


def wire_dtype(name: str) -> np.dtype[Any]:
    """The little-endian numpy dtype for a dtype name sent on the wire; only :data:`WIRE_DTYPES`."""
    dtype = _WIRE.get(name)
    if dtype is None:
        hint = " (data is always little-endian: send the plain name)" if name.startswith(("<", ">", "=", "|")) else ""
        raise InvalidArgument(f"unknown dtype {client_text(name)}{hint}; use one of {', '.join(WIRE_DTYPES)}")
    return dtype


@functools.lru_cache(maxsize=64)
def wire_name(dtype: np.dtype[Any]) -> str | None:
    """The wire name of a little-endian (or byte-order-free) ``dtype``; None when none fits.

    Cached: numpy 2 computes ``dtype.name`` in Python, about 2 us per tensor.
    """
    name = dtype.name
    return name if name in _WIRE and dtype.byteorder != ">" else None


def check_shape(shape: Sequence[int], spec: TensorSpec, *, what: str = "tensor") -> None:
    """Raise :class:`InvalidArgument` unless ``shape`` fits ``spec`` (rank and fixed dims)."""
    if spec.shape is None:
        return
    if len(shape) != len(spec.shape):
        raise InvalidArgument(
            f"{what} has rank {len(shape)} (shape {client_text(shape)}), expected rank "
            f"{len(spec.shape)} ({spec.describe()})"
        )
    for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
        if want is not None and got != want:
            raise InvalidArgument(
                f"{what} dimension {axis} is {got}, expected {want} ({spec.describe()}); "
                f"got shape {client_text(shape)}"
            )


def checked_payload(message: Any, spec: TensorSpec, dtype_name: str, itemsize: int) -> tuple[list[int], bytes]:
    """A ``TensorProto``'s shape and bytes, once the shape fits ``spec`` and the byte count the shape.

    Shared by every decoder (numpy here, framework tensors in plugins) after it has
    resolved the dtype to ``dtype_name``, which the message must spell exactly: decoders
    that resolve names with numpy would otherwise take aliases and byte-order prefixes
    (``">f4"``, read as little-endian). Raises :class:`InvalidArgument` naming what is
    wrong. The shape comes from the client, so its rank is bounded before it is copied,
    and the byte count it implies is multiplied out only until it passes what was received.
    """
    if message.dtype != dtype_name:
        raise InvalidArgument(f"dtype {client_text(message.dtype)} is not a wire dtype name; send {dtype_name!r}")
    rank = len(message.shape)
    if rank > MAX_RANK:
        raise InvalidArgument(f"shape {client_text(message.shape)} has rank {rank}, over the limit of {MAX_RANK}")
    shape = list(message.shape)
    for axis, dim in enumerate(shape):
        if dim < 0:
            raise InvalidArgument(f"negative dimension {dim} at axis {axis} in shape {client_text(shape)}")
    check_shape(shape, spec)
    data = message.data
    received = len(data)
    if 0 in shape:
        # No bytes needed, but numpy still refuses an empty array whose other dimensions
        # could not be addressed.
        if _byte_count(shape, itemsize, _ADDRESSABLE) is None:
            raise InvalidArgument(f"shape {client_text(shape)} of {dtype_name} is too large, even for an empty array")
        needed: int | None = 0
    else:
        needed = _byte_count(shape, itemsize, received)
    if needed != received:
        amount = f"more than {received}" if needed is None else str(needed)
        raise InvalidArgument(
            f"data has {received} bytes, but shape {client_text(shape)} of {dtype_name} needs {amount}"
        )
    return shape, data


def _byte_count(shape: Sequence[int], itemsize: int, limit: int) -> int | None:
    """``itemsize`` times the non-zero dimensions, or None as soon as that passes ``limit``.

    Stopping early keeps the numbers small: multiplying out 64 dimensions of 2**62 would
    otherwise build a 4 000-digit integer for a request that cannot be satisfied anyway.
    """
    count = itemsize
    for dim in shape:
        if dim:
            count *= dim
            if count > limit:
                return None
    return count


def array_from_wire(message: Any, spec: TensorSpec) -> np.ndarray[Any, Any]:
    """Decode a ``TensorProto`` into a read-only array that shares the message's bytes."""
    if not message.dtype:
        raise InvalidArgument("tensor has no dtype")
    name = message.dtype
    dtype = wire_dtype(name)
    if spec.dtype is not None and dtype is not spec.dtype and dtype != spec.dtype:
        raise InvalidArgument(f"dtype is {name}, expected {spec.dtype.name}")
    shape, data = checked_payload(message, spec, name, dtype.itemsize)
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def array_to_wire(array: Any, spec: TensorSpec | None = None) -> dict[str, Any]:
    """Encode an array-like as ``TensorProto`` constructor arguments (C order, little endian)."""
    arr = np.asarray(array)
    if spec is not None and spec.dtype is not None and arr.dtype != spec.dtype:
        arr = arr.astype(spec.dtype)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    name = wire_name(arr.dtype)
    if name is None:
        # A client could not read it back (strings, objects, datetimes, float128...).
        raise TypeError(f"a tensor of dtype {arr.dtype} cannot travel in a TensorProto")
    if spec is not None:
        check_shape(arr.shape, spec, what="returned tensor")
    return {"shape": arr.shape, "dtype": name, "data": arr.tobytes()}


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


def numpy_mapping(spec: TensorSpec, context: TypeContext) -> FieldMapping:
    """The ``TensorProto`` field of a numpy tensor annotation (``TensorInput``, ``np.ndarray``)."""
    batch = numpy_axis(spec.batch_named) if spec.batchable else None
    return tensor_mapping(
        context, spec, decode=lambda m: array_from_wire(m, spec), encode=lambda a: array_to_wire(a, spec), batch=batch
    )
