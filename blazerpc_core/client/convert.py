"""Python values to protobuf messages and back, driven only by descriptors learnt through reflection.

The client has no Python annotations to go by, so each message type gets a
:class:`MessageCodec` built from its descriptor: per field, a function that turns a
Python value into what protobuf's constructor accepts (dicts for nested messages, enum
numbers, ``TensorProto`` fields for arrays) and one that turns a parsed field back into a
Python value (dicts, lists, enum member names, read-only numpy arrays). A request is then
built with one constructor call, which keeps the per-call cost in protobuf's C code.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

#: The message that carries tensors (``blaze_service.proto``, DESIGN §3).
TENSOR_TYPE = "blazerpc.TensorProto"
#: dtype names a ``TensorProto`` may carry (README, "The wire contract"); bfloat16 needs ml_dtypes.
WIRE_DTYPES = frozenset({
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128", "bfloat16",
})

Encode = Callable[[Any], Any]
Decode = Callable[[Any], Any]

_SCALAR_NAMES = {
    FieldDescriptor.TYPE_DOUBLE: "double", FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_INT64: "int64", FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_INT32: "int32", FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_SINT32: "sint32", FieldDescriptor.TYPE_SINT64: "sint64",
    FieldDescriptor.TYPE_FIXED32: "fixed32", FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32", FieldDescriptor.TYPE_SFIXED64: "sfixed64",
    FieldDescriptor.TYPE_BOOL: "bool", FieldDescriptor.TYPE_STRING: "string", FieldDescriptor.TYPE_BYTES: "bytes",
}


# --- tensors ----------------------------------------------------------------------------


@functools.cache
def wire_dtype(name: str) -> np.dtype[Any]:
    """The little-endian numpy dtype a ``TensorProto`` dtype name stands for."""
    if name not in WIRE_DTYPES:
        raise ValueError(f"the server sent a tensor of unknown dtype {name[:40]!r}")
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError as exc:
            raise ValueError("reading a bfloat16 tensor needs the ml_dtypes package (pip install ml_dtypes)") from exc
        bfloat16: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
        return bfloat16
    return np.dtype(name).newbyteorder("<")


@functools.lru_cache(maxsize=64)
def wire_name(dtype: np.dtype[Any]) -> str | None:
    """The ``TensorProto`` name of a little-endian ``dtype``, None when it has none.

    Cached: numpy 2 computes ``dtype.name`` in Python, about 2 us per tensor.
    """
    name = dtype.name
    return name if name in WIRE_DTYPES and dtype.byteorder != ">" else None


def tensor_fields(value: Any) -> dict[str, Any]:
    """``TensorProto`` constructor arguments for an array-like, C order and little-endian.

    Also takes ``{"dtype": ..., "data": [...], "shape": [...]}`` (what ``blazerpc call``
    prints), so a JSON tensor can be sent back as it came.
    """
    if isinstance(value, Mapping):
        if "data" not in value or "dtype" not in value:
            raise TypeError("a tensor given as a mapping needs 'dtype' and 'data' (and optionally 'shape')")
        array = np.asarray(value["data"], dtype=wire_dtype(str(value["dtype"])))
        if "shape" in value:
            array = array.reshape([int(d) for d in value["shape"]])
    else:
        array = np.asarray(value)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    name = wire_name(array.dtype)
    if name is None:
        raise TypeError(f"an array of dtype {array.dtype} cannot travel in a TensorProto "
                        f"(use one of {', '.join(sorted(WIRE_DTYPES))})")
    # tobytes() writes C order whatever the array's own layout.
    return {"shape": array.shape, "dtype": name, "data": array.tobytes()}


def tensor_value(message: Any) -> np.ndarray[Any, Any]:
    """The read-only array a ``TensorProto`` holds, sharing the message's bytes."""
    dtype = wire_dtype(message.dtype)
    shape = list(message.shape)
    data = message.data
    count = 1
    for dim in shape:
        count *= dim
    if min(shape, default=0) < 0 or count * dtype.itemsize != len(data):
        raise ValueError(f"the server sent a tensor of shape {shape[:8]} and dtype {dtype.name} "
                         f"with {len(data)} bytes of data")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


# --- enums ------------------------------------------------------------------------------


def _upper_snake(name: str) -> str:
    """``TrafficLight`` → ``TRAFFIC_LIGHT``: the prefix blazerpc gives enum value names."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


class EnumCodec:
    """Enum values by member name (``"GREEN"``), full value name (``"COLOR_GREEN"``), number or ``enum.Enum``."""

    def __init__(self, descriptor: EnumDescriptor) -> None:
        self.name = descriptor.name
        prefix = _upper_snake(descriptor.name) + "_"
        values = list(descriptor.values)
        strip = all(v.name.startswith(prefix) and len(v.name) > len(prefix) for v in values)
        self.members: dict[int, str] = {}
        self._numbers: dict[str, int] = {}
        for value in values:
            short = value.name[len(prefix):] if strip else value.name
            self.members.setdefault(value.number, short)
            self._numbers[short] = self._numbers[value.name] = value.number

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.members.values())

    def encode(self, value: Any) -> int:
        if isinstance(value, enum.Enum):
            value = value.name
        if isinstance(value, str):
            number = self._numbers.get(value, self._numbers.get(value.upper()))
            if number is None:
                raise ValueError(f"{value[:40]!r} is not a value of enum {self.name} "
                                 f"(one of {', '.join(self.labels)})")
            return number
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"enum {self.name} takes a member name or number, not {type(value).__name__}")
        return int(value)

    def decode(self, number: int) -> str | int:
        """The member name; a number this schema does not know stays a number."""
        return self.members.get(number, number)


# --- fields and messages ----------------------------------------------------------------


def _identity(value: Any) -> Any:
    return value


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"expected bytes, got {type(value).__name__}")


def _as_list(value: Any) -> Iterable[Any]:
    if isinstance(value, (str, bytes, Mapping)):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    if isinstance(value, np.ndarray):
        return value.tolist()  # type: ignore[no-any-return]
    return value  # type: ignore[no-any-return]


def record_items(value: Any) -> Mapping[str, Any]:
    """A nested message's fields from a dict, a dataclass instance, a NamedTuple or an object's attributes."""
    if isinstance(value, Mapping):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    as_dict = getattr(value, "_asdict", None)
    if callable(as_dict):
        return as_dict()  # type: ignore[no-any-return]
    raise TypeError(f"expected a dict (or dataclass / NamedTuple) for a message, got {type(value).__name__}")


@dataclasses.dataclass(frozen=True)
class FieldCodec:
    """How one field is described, checked, encoded and decoded."""

    name: str
    type: str  #: proto-like type: ``double``, ``repeated string``, ``map<string, double>``, ``Box``
    required: bool  #: a call must give it (a non-optional singular field, like a parameter without default)
    encode: Encode
    decode: Decode
    enum_labels: tuple[str, ...] = ()


class Codecs:
    """Codecs for every message type of one schema, built on first use and cached."""

    def __init__(self) -> None:
        self._messages: dict[str, MessageCodec] = {}
        self._enums: dict[str, EnumCodec] = {}

    def message(self, descriptor: Descriptor) -> MessageCodec:
        codec = self._messages.get(descriptor.full_name)
        if codec is None:
            # Registered before its fields are built, so a recursive type finds itself.
            codec = self._messages[descriptor.full_name] = MessageCodec(descriptor, self)
            codec.build_fields()
        return codec

    def enum(self, descriptor: EnumDescriptor) -> EnumCodec:
        codec = self._enums.get(descriptor.full_name)
        if codec is None:
            codec = self._enums[descriptor.full_name] = EnumCodec(descriptor)
        return codec

    def _single(self, field: FieldDescriptor) -> tuple[str, Encode, Decode, tuple[str, ...]]:
        """Type name, encoder and decoder of one value of ``field`` (an element, for repeated fields)."""
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            message = field.message_type
            if message.full_name == TENSOR_TYPE:
                return "TensorProto", tensor_fields, tensor_value, ()
            nested = self.message(message)
            return message.name, nested.encode_record, nested.decode_dict, ()
        if field.type == FieldDescriptor.TYPE_ENUM:
            codec = self.enum(field.enum_type)
            return codec.name, codec.encode, codec.decode, codec.labels
        if field.type == FieldDescriptor.TYPE_BYTES:
            return "bytes", _bytes, _identity, ()
        return _SCALAR_NAMES.get(field.type, "scalar"), _identity, _identity, ()

    def field(self, field: FieldDescriptor) -> FieldCodec:
        name = field.name
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if field.is_repeated and is_message and field.message_type.GetOptions().map_entry:
            entry = field.message_type
            key_type, _, _, _ = self._single(entry.fields_by_name["key"])
            value_type, encode_value, decode_value, labels = self._single(entry.fields_by_name["value"])

            def encode_map(value: Any) -> Any:
                if not isinstance(value, Mapping):
                    raise TypeError(f"expected a dict, got {type(value).__name__}")
                if encode_value is _identity:
                    return value
                return {k: encode_value(v) for k, v in value.items()}

            def decode_map(value: Any) -> Any:
                return {k: decode_value(v) for k, v in value.items()}

            return FieldCodec(name, f"map<{key_type}, {value_type}>", False, encode_map, decode_map, labels)
        type_name, encode_one, decode_one, labels = self._single(field)
        if field.is_repeated:
            def encode_list(value: Any) -> Any:
                items = _as_list(value)
                return items if encode_one is _identity else [encode_one(v) for v in items]

            def decode_list(value: Any) -> Any:
                return list(value) if decode_one is _identity else [decode_one(v) for v in value]

            return FieldCodec(name, f"repeated {type_name}", False, encode_list, decode_list, labels)
        optional = field.containing_oneof is not None and field.containing_oneof.name == f"_{name}"
        if optional:
            type_name = f"optional {type_name}"
        return FieldCodec(name, type_name, not optional, encode_one, decode_one, labels)


class MessageCodec:
    """Builds one message type from keyword values and reads it back as a dict."""

    def __init__(self, descriptor: Descriptor, codecs: Codecs) -> None:
        self.descriptor = descriptor
        self.cls: Any = message_factory.GetMessageClass(descriptor)
        self._codecs = codecs
        self.fields: dict[str, FieldCodec] = {}
        self._presence: frozenset[str] = frozenset()
        self.required: frozenset[str] = frozenset()

    def build_fields(self) -> None:
        self.fields = {f.name: self._codecs.field(f) for f in self.descriptor.fields}
        self._presence = frozenset(
            f.name for f in self.descriptor.fields if f.has_presence and not f.is_repeated
        )
        self.required = frozenset(name for name, f in self.fields.items() if f.required)

    def encode_values(self, values: Mapping[str, Any], *, what: str) -> dict[str, Any]:
        """Constructor arguments for ``values``; None leaves a field out (absent)."""
        out: dict[str, Any] = {}
        fields = self.fields
        for name, value in values.items():
            field = fields.get(name)
            if field is None:
                raise TypeError(f"{what} has no field {name!r}; its fields are {', '.join(fields) or '(none)'}")
            if value is None:
                continue
            try:
                out[name] = field.encode(value)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{what} field {name!r} ({field.type}): {exc}") from None
        return out

    def encode_record(self, value: Any) -> dict[str, Any]:
        """A nested message's constructor arguments (dicts nest inside the outer constructor)."""
        return self.encode_values(record_items(value), what=f"message {self.descriptor.name}")

    def build(self, encoded: Mapping[str, Any], *, what: str) -> Any:
        """The message; a value protobuf itself refuses is reported with the field it was given for."""
        try:
            return self.cls(**encoded)
        except (TypeError, ValueError) as exc:
            for name, value in encoded.items():
                try:
                    self.cls(**{name: value})
                except (TypeError, ValueError) as field_exc:
                    raise type(exc)(
                        f"{what} field {name!r} ({self.fields[name].type}): {field_exc}"
                    ) from None
            raise

    def decode_dict(self, message: Any) -> dict[str, Any]:
        """Every field as a Python value; absent optional fields and messages are None."""
        presence = self._presence
        return {
            name: (field.decode(getattr(message, name))
                   if name not in presence or message.HasField(name) else None)
            for name, field in self.fields.items()
        }

    def decode_single(self, message: Any, name: str) -> Any:
        if name in self._presence and not message.HasField(name):
            return None
        return self.fields[name].decode(getattr(message, name))
