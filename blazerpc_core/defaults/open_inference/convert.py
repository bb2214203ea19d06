"""Tensors of the protocol to a model's Python arguments, and its results back to tensors.

Inputs come from ``raw_input_contents`` (one entry per input, in order) or from each
input's typed ``contents``; outputs always go out in ``raw_output_contents``. BYTES
elements carry a 4-byte little-endian length prefix. Everything a client sends is
checked against what it claims before anything is allocated: the element count a shape
implies is multiplied out only until it passes what the bytes (or typed values) could
hold, so a hostile shape costs nothing. Errors name the input and quote the client only
through :func:`~blazerpc_core.errors.client_text`.
"""

from __future__ import annotations

import logging
import math
import struct
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from blazerpc_core.defaults.open_inference.datatypes import BY_WIRE, BYTES, DATATYPES, Datatype
from blazerpc_core.defaults.open_inference.tensor_form import Kind, TensorForm, TensorIO
from blazerpc_core.errors import BlazeError, InvalidArgument, client_text
from blazerpc_core.schema.tensors import MAX_RANK
from blazerpc_core.server.status import public_text

log = logging.getLogger("blazerpc.open_inference")

_LENGTH = struct.Struct("<I")
#: Typed contents that hold narrower integer datatypes, with the range each datatype allows.
_RANGES: dict[str, tuple[int, int]] = {
    "INT8": (-(2**7), 2**7 - 1), "INT16": (-(2**15), 2**15 - 1), "UINT8": (0, 2**8 - 1), "UINT16": (0, 2**16 - 1),
}
_CONTENT_DTYPES: dict[str, np.dtype[Any]] = {
    "bool_contents": np.dtype(np.bool_), "int_contents": np.dtype(np.int32), "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint32), "uint64_contents": np.dtype(np.uint64),
    "fp32_contents": np.dtype(np.float32), "fp64_contents": np.dtype(np.float64),
}


class WireTensor(NamedTuple):
    """What a tensor field's decoder reads: our ``TensorProto``'s shape, dtype name and bytes."""

    shape: list[int]
    dtype: str
    data: bytes


# -- inputs ---------------------------------------------------------------------------------


def decode_inputs(form: TensorForm, request: Any) -> list[Any]:
    """The model's arguments, in parameter order, from a ``ModelInferRequest``."""
    if form.reason:
        raise InvalidArgument(f"model {form.model.label} has no Open Inference tensor form: {form.reason}")
    tensors = request.inputs
    raw = request.raw_input_contents
    count = len(tensors)
    if raw and len(raw) != count:
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for {count} inputs; send one per input, in order, "
            "or none and typed contents"
        )
    values: dict[str, Any] = {}
    for index in range(count):
        tensor = tensors[index]
        name = tensor.name
        io = form.input(name)
        if io is None:
            known = ", ".join(repr(i.name) for i in form.inputs) or "none"
            raise InvalidArgument(f"unknown input {client_text(name)} for model {form.model.label} (inputs: {known})")
        if name in values:
            raise InvalidArgument(f"input {name!r} is given twice")
        if raw:
            if tensor.HasField("contents"):
                raise InvalidArgument(f"input {name!r} has typed contents and raw_input_contents both; send one")
            values[name] = _decode(io, tensor, raw[index])
        else:
            values[name] = _decode(io, tensor, None)
    if count == len(form.inputs):  # every input given: the usual case
        return [values[io.name] for io in form.inputs]
    args = []
    for io in form.inputs:
        if io.name in values:
            args.append(values[io.name])
        elif io.optional:
            args.append(io.default)
        else:
            raise InvalidArgument(f"missing input {io.name!r} ({io.describe()}) of model {form.model.label}")
    return args


def _decode(io: TensorIO, tensor: Any, raw: bytes | None) -> Any:
    what = f"input {io.name!r}"
    row = DATATYPES.get(tensor.datatype)
    if row is None:
        raise InvalidArgument(f"{what} has unknown datatype {client_text(tensor.datatype)}; use one of "
                              f"{', '.join(DATATYPES)}")
    if io.datatype is not None and row is not io.datatype:
        raise InvalidArgument(f"{what} has datatype {row.name}, expected {io.datatype.name}")
    shape = _checked_shape(tensor.shape, what)
    if io.kind is Kind.SCALAR and shape != [1]:
        raise InvalidArgument(f"{what} has shape {client_text(shape)}, expected [1]")
    if io.kind is Kind.LIST and len(shape) != 1:
        raise InvalidArgument(f"{what} has shape {client_text(shape)}, expected one dimension ([-1])")
    if row.name == BYTES:
        if io.kind is Kind.TENSOR:
            raise InvalidArgument(f"{what} has datatype BYTES, but it is a numeric tensor ({io.mapping.description})")
        items: list[Any] = _bytes_items(shape, raw, tensor, what)
        if io.text:
            items = [_text(item, what, index) for index, item in enumerate(items)]
        value: Any = items[0] if io.kind is Kind.SCALAR else items
    elif io.kind is Kind.TENSOR:
        data = _payload(row, shape, raw, tensor, what)
        value = WireTensor(shape, row.wire, data)
    else:
        value = _array(row, shape, raw, tensor, what).tolist()
        if io.kind is Kind.SCALAR:
            value = value[0]
    decode = io.mapping.decode
    if decode is None:
        return value
    try:
        return decode(value)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{what}: {exc.message}") from None
    except BlazeError:
        raise
    except Exception as exc:
        # A converter that chokes on what the client sent is answering bad input.
        log.debug("decoding %s failed", what, exc_info=True)
        raise InvalidArgument(f"{what} could not be decoded: {type(exc).__name__}: {public_text(exc)[:200]}") from exc


def _checked_shape(shape: Sequence[int], what: str) -> list[int]:
    dims = list(shape)
    if len(dims) > MAX_RANK:
        raise InvalidArgument(f"{what} has rank {len(dims)}, over the limit of {MAX_RANK}")
    if dims and min(dims) < 0:
        axis = next(i for i, dim in enumerate(dims) if dim < 0)
        raise InvalidArgument(
            f"{what} has negative dimension {dims[axis]} at axis {axis} in shape {client_text(dims)}"
        )
    return dims


#: Up to this rank a shape's element count is multiplied out at once: 8 dimensions of at most
#: 2**63 make a number of 504 bits at most, still cheap (the early-stopping loop covers the rest).
_SMALL_RANK = 8


def _elements(shape: Sequence[int], limit: int) -> int | None:
    """Elements in ``shape``, or None when the count passes ``limit`` (bounded work for any shape)."""
    if len(shape) <= _SMALL_RANK:
        count = math.prod(shape)
        return None if count > limit else count
    if 0 in shape:
        return 0
    count = 1
    for dim in shape:
        count *= dim
        if count > limit:
            return None
    return count


def _count_error(what: str, shape: Sequence[int], row: Datatype, needed: int | None, got: int, unit: str) -> str:
    amount = "more than an array can address" if needed is None else str(needed)
    return f"{what}: shape {client_text(list(shape))} of {row.name} needs {amount} {unit}, got {got}"


def _payload(row: Datatype, shape: list[int], raw: bytes | None, tensor: Any, what: str) -> bytes:
    """The little-endian bytes of a numeric tensor, once their count matches the shape."""
    if raw is None:
        return _typed(row, shape, tensor, what).tobytes()
    needed = _elements(shape, len(raw) // row.itemsize)
    if needed is None or needed * row.itemsize != len(raw):
        # Worked out again for the message, up to what an array could address at all.
        exact = _elements(shape, sys.maxsize // row.itemsize)
        needed_bytes = None if exact is None else exact * row.itemsize
        raise InvalidArgument(_count_error(what, shape, row, needed_bytes, len(raw), "bytes"))
    return raw


def _array(row: Datatype, shape: list[int], raw: bytes | None, tensor: Any, what: str) -> np.ndarray[Any, Any]:
    if raw is None:
        return _typed(row, shape, tensor, what)
    assert row.numpy is not None
    return np.frombuffer(_payload(row, shape, raw, tensor, what), dtype=row.numpy)


def _typed(row: Datatype, shape: list[int], tensor: Any, what: str) -> np.ndarray[Any, Any]:
    """A numeric tensor from typed contents, range-checked for datatypes narrower than their contents field."""
    if not row.contents or row.numpy is None:
        raise InvalidArgument(f"{what} is {row.name}, which has no typed contents: send it in raw_input_contents")
    values = getattr(tensor.contents, row.contents)
    needed = _elements(shape, len(values))
    if needed != len(values):
        raise InvalidArgument(_count_error(what, shape, row, _elements(shape, sys.maxsize), len(values),
                                           f"values in {row.contents}"))
    array = np.asarray(values, dtype=_CONTENT_DTYPES[row.contents])
    bounds = _RANGES.get(row.name)
    if bounds is not None and array.size and (array.min() < bounds[0] or array.max() > bounds[1]):
        raise InvalidArgument(f"{what} has values outside the range of {row.name} ({bounds[0]} to {bounds[1]})")
    return array.astype(row.numpy, copy=False)


def _bytes_items(shape: list[int], raw: bytes | None, tensor: Any, what: str) -> list[bytes]:
    """The elements of a BYTES tensor: length-prefixed in raw bytes, or ``bytes_contents``."""
    row = DATATYPES[BYTES]
    if raw is None:
        items = list(tensor.contents.bytes_contents)
        needed = _elements(shape, len(items))
        if needed != len(items):
            raise InvalidArgument(_count_error(what, shape, row, _elements(shape, sys.maxsize), len(items),
                                               "elements in bytes_contents"))
        return items
    # Every element takes at least its 4-byte prefix: that bounds the count before reading any.
    count = _elements(shape, len(raw) // _LENGTH.size)
    if count is None:
        raise InvalidArgument(
            f"{what}: shape {client_text(shape)} has more BYTES elements than {len(raw)} bytes can hold"
        )
    items = []
    position, end = 0, len(raw)
    for index in range(count):
        if position + _LENGTH.size > end:
            raise InvalidArgument(f"{what}: its BYTES data ends before element {index} of {count}")
        (length,) = _LENGTH.unpack_from(raw, position)
        position += _LENGTH.size
        if position + length > end:
            raise InvalidArgument(f"{what}: BYTES element {index} claims {length} bytes; only {end - position} remain")
        items.append(raw[position : position + length])
        position += length
    if position != end:
        raise InvalidArgument(f"{what}: {end - position} bytes follow its last BYTES element (shape "
                              f"{client_text(shape)} has {count})")
    return items


def _text(item: bytes, what: str, index: int) -> str:
    try:
        return item.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"{what}: element {index} is not UTF-8 text: {client_text(item)}") from None


# -- outputs --------------------------------------------------------------------------------


def encode_bytes(items: Sequence[bytes]) -> bytes:
    """BYTES elements, each after its 4-byte little-endian length."""
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def requested_outputs(form: TensorForm, request: Any) -> tuple[TensorIO, ...]:
    """The outputs a request asks for (all of them, in declared order, when it names none)."""
    wanted = request.outputs
    if not wanted:
        return form.outputs
    chosen = []
    for item in wanted:
        io = form.output(item.name)
        if io is None:
            known = ", ".join(repr(o.name) for o in form.outputs) or "none"
            raise InvalidArgument(
                f"unknown output {client_text(item.name)} of model {form.model.label} (outputs: {known})"
            )
        chosen.append(io)
    return tuple(chosen)


def encode_outputs(
    form: TensorForm, result: Any, wanted: Sequence[TensorIO]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """``outputs`` (name, datatype, shape) and the parallel ``raw_output_contents`` for one result.

    A value that does not fit its output is the model's fault: INTERNAL, naming the output.
    """
    values = form.model.result_values(result)
    if wanted is not form.outputs:
        by_name = dict(zip((io.name for io in form.outputs), values, strict=True))
        values = [by_name[io.name] for io in wanted]
    outputs: list[dict[str, Any]] = []
    contents: list[bytes] = []
    for io, value in zip(wanted, values, strict=True):
        if value is None:
            continue  # an optional output the model left empty
        try:
            datatype, shape, data = _encode(io, value)
        except Exception as exc:
            reason = exc.message if isinstance(exc, BlazeError) else f"{type(exc).__name__}: {public_text(exc)}"
            raise BlazeError(
                f"model {form.model.label} returned a value that does not fit output {io.name!r}: {reason}"
            ) from exc
        outputs.append({"name": io.name, "datatype": datatype, "shape": shape})
        contents.append(data)
    return outputs, contents


def _encode(io: TensorIO, value: Any) -> tuple[str, list[int], bytes]:
    encode = io.mapping.encode
    if encode is not None:
        value = encode(value)
    if io.kind is Kind.TENSOR:
        row = BY_WIRE.get(value["dtype"])
        if row is None or row.name == BYTES:
            raise TypeError(f"dtype {value['dtype']} has no Open Inference datatype")
        return row.name, list(value["shape"]), value["data"]
    row = io.datatype
    assert row is not None
    items = [value] if io.kind is Kind.SCALAR else list(value)
    if row.name == BYTES:
        return BYTES, [len(items)], encode_bytes([i.encode("utf-8") if isinstance(i, str) else bytes(i) for i in items])
    assert row.numpy is not None
    return row.name, [len(items)], np.asarray(items, dtype=row.numpy).tobytes()
