"""Structure-aware fuzzing of every request message, as raw bytes over a real socket.

For each rpc of a varied app (``tests.apps.varied_app()`` plus models for what it lacks:
batched tensors of other dtypes, a batched list, defaults and optionals, an enum inside a
dataclass, maps of ints, bytes and messages), hypothesis builds valid request messages from
the compiled stubs' descriptors, with ``TensorProto`` values drawn to be interesting (known
and random dtype strings; shapes that are small, negative, huge, 60-70 dimensions or
thousands; byte counts that match or do not), then mutates the encoded bytes: bit flips,
truncation, inserted garbage, a field's number or wire type changed, a huge length prefix,
a field dropped or repeated, an overlong varint, an unknown field, and the same again
inside nested messages. One to three such messages go out at once (so batched models mix
them), each with a 5 s deadline.

Every answer must be OK (with a response that parses) or INVALID_ARGUMENT or
RESOURCE_EXHAUSTED with a short message: never UNKNOWN, never INTERNAL (the models are
total functions, so INTERNAL could only mean client input was blamed on the server), never
DEADLINE_EXCEEDED. After each rpc's run the server must still answer a health check and a
good call. Hypothesis runs derandomized with no example database, so CI sees the same
cases every time; the last test prints how many ran and how they were answered.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from blazerpc_core import BlazeApp, TensorInput, TensorOutput
from blazerpc_core.schema.tensors import MAX_RANK, WIRE_DTYPES
from blazerpc_core.testing import Stubs, compile_stubs, start_server, tensor_proto
from tests.apps import Box, Color, varied_app

#: Examples per rpc; each sends one to three messages. Sized for about a minute in CI.
EXAMPLES = 160
CALL_TIMEOUT = 5.0
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
MAX_DETAILS = 600
TENSOR = "blazerpc.TensorProto"
SERVICE = "blazerpc.InferenceService"


# --- the app: varied_app() plus what it lacks ---------------------------------------------


class Level(enum.Enum):
    LOW = 1
    MID = 2
    HIGH = 3


@dataclasses.dataclass
class Query:
    text: str
    level: Level
    limit: int | None
    tags: dict[str, int]
    weights: list[float]
    vector: np.ndarray


class Summary(NamedTuple):
    total: float
    count: int
    labels: list[str]


def extras_app() -> BlazeApp:
    """Models for the types and settings ``varied_app()`` does not cover; every one is total."""
    app = BlazeApp()

    @app.model("embed")
    def embed(x: TensorInput[np.int64, "batch", None]) -> TensorOutput[np.float32, "batch", 1]:
        return x.astype(np.float32).sum(axis=1, keepdims=True)

    @app.model("pixels")
    def pixels(img: TensorInput[np.uint8, "batch", 2, 2]) -> TensorOutput[np.uint8, "batch", 2, 2]:
        return 255 - img

    @app.model("score", batch=True)
    def score(texts: list[str]) -> list[float]:
        return [float(len(t)) for t in texts]

    @app.model("pick")
    def pick(level: Level = Level.MID, n: int = 3, name: str | None = None, scale: float = 0.5) -> str:
        return f"{level.name}:{n}:{name}:{scale}"

    @app.model("search")
    def search(query: Query, boost: dict[int, float], colors: list[Color]) -> Summary:
        total = sum(query.weights) + sum(boost.values())
        return Summary(total, len(colors) + len(query.tags) + int(query.vector.size), [c.name for c in colors])

    @app.model("index")
    def index(blobs: dict[str, bytes], boxes: dict[str, Box]) -> dict[str, int]:
        return {**{k: len(v) for k, v in blobs.items()}, **{k: len(b.label) for k, b in boxes.items()}}

    return app


def _box(pb2: Any) -> Any:
    return pb2.Box(x=1.0, y=2.0, label="a")


#: A request each rpc answers OK, sent after its fuzzing to show the server still serves it;
#: its keys are the rpcs fuzzed, checked against the server's own list.
GOOD: dict[str, Callable[[Any], Any]] = {
    "PredictAdd": lambda pb2: pb2.AddRequest(a=1, b=2),
    "PredictEchoScalars": lambda pb2: pb2.EchoScalarsRequest(s="s", i=1, flag=True, raw=b"\x01"),
    "PredictCountWords": lambda pb2: pb2.CountWordsRequest(texts=["a b"]),
    "PredictMaybe": lambda pb2: pb2.MaybeRequest(x=3),
    "PredictWeights": lambda pb2: pb2.WeightsRequest(scores={"a": 1.0}),
    "PredictNextColor": lambda pb2: pb2.NextColorRequest(color=1),
    "PredictArea": lambda pb2: pb2.AreaRequest(box=_box(pb2), boxes=[_box(pb2)]),
    "PredictShift": lambda pb2: pb2.ShiftRequest(box=_box(pb2)),
    "PredictFlip": lambda pb2: pb2.FlipRequest(x=tensor_proto(pb2, np.arange(4.0))),
    "PredictClassify": lambda pb2: pb2.ClassifyRequest(x=tensor_proto(pb2, np.ones((2, 8), np.float32))),
    "PredictVersionMe": lambda pb2: pb2.VersionMeRequest(x=1),
    "PredictVersionMeV1": lambda pb2: pb2.VersionMeV1Request(x=1),
    "PredictVersionMeV2": lambda pb2: pb2.VersionMeV2Request(x=1),
    "PredictEmbed": lambda pb2: pb2.EmbedRequest(x=tensor_proto(pb2, np.ones((2, 3), np.int64))),
    "PredictPixels": lambda pb2: pb2.PixelsRequest(img=tensor_proto(pb2, np.zeros((1, 2, 2), np.uint8))),
    "PredictScore": lambda pb2: pb2.ScoreRequest(texts=["abc"]),
    "PredictPick": lambda pb2: pb2.PickRequest(),
    "PredictSearch": lambda pb2: pb2.SearchRequest(
        query=pb2.Query(text="t", level=1, tags={"a": 1}, weights=[0.5], vector=tensor_proto(pb2, [1.0])),
        boost={1: 2.0}, colors=[0, 2],
    ),
    "PredictIndex": lambda pb2: pb2.IndexRequest(blobs={"a": b"xyz"}, boxes={"b": _box(pb2)}),
}
RPCS = list(GOOD)


# --- valid messages from descriptors --------------------------------------------------------

_INT_RANGES = {
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1), FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
}
_TEXT = st.text(st.characters(codec="utf-8"), max_size=24)
WEIRD_DTYPES = [
    "", "f4", ">f4", "<f4", "=f8", "float", "double", "bfloat16", "float128", "object", "O", "V4", "S3", "U2",
    "M8", "i4,i4", ",", "(2,)f4", "(1000000000,)f4", "Float32", "float32 ", "float32\0", "int", "b1", "?",
]
_DIM_EDGES = [0, 1, 2, 3, 8, 2**31 - 1, 2**31, 2**32, 2**61, 2**62, 2**63 - 1, -1, -(2**63)]


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        return st.one_of(st.integers(-3, 10), st.integers(low, high), st.sampled_from([low, high]))
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return _TEXT
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=32)
    if kind == FieldDescriptor.TYPE_ENUM:
        count = len(field.enum_type.values)
        return st.integers(-2, count + 2)  # open enums: numbers past the declared ones too
    raise AssertionError(f"no strategy for field type {kind}")


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, Any]:
    """``TensorProto`` fields: now and then right, otherwise wrong in every way we could think of."""
    dtype = draw(st.one_of(st.sampled_from(WIRE_DTYPES), st.sampled_from(WEIRD_DTYPES), _TEXT))
    shape = draw(st.one_of(
        st.lists(st.sampled_from([0, 1, 2, 3, 8]), max_size=4),
        st.lists(st.sampled_from(_DIM_EDGES), max_size=6),
        st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4),
        st.lists(st.sampled_from([0, 1, 2**62]), min_size=MAX_RANK - 4, max_size=MAX_RANK + 6),
        st.integers(1000, 5000).map(lambda n: [1] * n),
    ))
    itemsize = np.dtype(dtype).itemsize if dtype in WIRE_DTYPES else 4
    size = 0 if any(d == 0 for d in shape) else 1
    for dim in shape:
        size = size * dim if 0 <= size <= 4096 else size
    exact = [size * itemsize] if all(d >= 0 for d in shape) and 0 <= size * itemsize <= 4096 else []
    length = draw(st.sampled_from([*exact, *exact, 0, 1, 3, 7, 16]) | st.integers(0, 64))
    return {"shape": shape, "dtype": dtype, "data": draw(st.binary(min_size=length, max_size=length))}


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Valid instances of ``descriptor``'s message class, every field type and presence covered."""
    cls = GetMessageClass(descriptor)
    if descriptor.full_name == TENSOR:
        return tensors().map(lambda fields: cls(**fields))

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        for field in descriptor.fields:
            is_message = field.type == FieldDescriptor.TYPE_MESSAGE
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                entry = field.message_type.fields_by_name
                key_field, value_field = entry["key"], entry["value"]
                value_is_message = value_field.type == FieldDescriptor.TYPE_MESSAGE
                values = messages(value_field.message_type, depth + 1) if value_is_message else _scalar(value_field)
                entries = draw(st.dictionaries(_scalar(key_field), values, max_size=0 if depth > 2 else 3))
                target = getattr(message, field.name)
                for key, value in entries.items():
                    if value_is_message:
                        target[key].CopyFrom(value)
                    else:
                        target[key] = value
            elif field.is_repeated:
                items = messages(field.message_type, depth + 1) if is_message else _scalar(field)
                values = draw(st.lists(items, max_size=0 if depth > 2 else 3))
                target = getattr(message, field.name)
                for value in values:
                    if is_message:
                        target.add().CopyFrom(value)
                    else:
                        target.append(value)
            elif field.has_presence and not draw(st.integers(0, 4)):
                continue  # left out: optional fields take their default, message fields are missing
            elif is_message:
                if depth <= 2:
                    getattr(message, field.name).CopyFrom(draw(messages(field.message_type, depth + 1)))
            else:
                setattr(message, field.name, draw(_scalar(field)))
        return message

    return build()


@st.composite
def tweaked(draw: st.DrawFn, message: Message) -> Message:
    """``message`` (a known-good request) with each tensor kept, resized along its first
    dimension, or given a drawn dtype, shape or data: mostly-valid tensors, so the valid
    paths run too and batching sees mixed, differently sized requests."""
    _tweak(draw, message)
    return message


def _tweak(draw: st.DrawFn, message: Message) -> None:
    if message.DESCRIPTOR.full_name == TENSOR:
        _tweak_tensor(draw, message)
        return
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            is_message = field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE
            inner = [value[key] for key in sorted(value)] if is_message else []
        else:
            inner = list(value) if field.is_repeated else [value]
        for item in inner:
            _tweak(draw, item)


def _tweak_tensor(draw: st.DrawFn, tensor: Message) -> None:
    how = draw(st.sampled_from(["keep", "rows", "rows", "rows", "dtype", "shape", "data"]))
    if how == "rows" and tensor.shape and tensor.shape[0] > 0:
        row = len(tensor.data) // tensor.shape[0]
        rows = draw(st.integers(0, 5))
        tensor.shape[0] = rows
        tensor.data = draw(st.binary(min_size=row * rows, max_size=row * rows))
    elif how == "shape":
        del tensor.shape[:]
        tensor.shape.extend(draw(tensors())["shape"])
    elif how in ("dtype", "data"):
        setattr(tensor, how, draw(tensors())[how])


# --- mutations of the encoded bytes -----------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(raw: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(raw) or shift > 63:
            raise ValueError("bad varint")
        byte = raw[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


class Token(NamedTuple):
    """One top-level field of an encoded message: number, wire type, and the bytes after the tag."""

    number: int
    wire: int
    body: bytes


def tokens(raw: bytes) -> list[Token] | None:
    """The top-level fields of ``raw``, or None if it does not parse as protobuf wire format."""
    out, at = [], 0
    try:
        while at < len(raw):
            tag, at = _read_varint(raw, at)
            number, wire, start = tag >> 3, tag & 7, at
            if wire == 0:
                _, at = _read_varint(raw, at)
            elif wire == 1:
                at += 8
            elif wire == 2:
                length, at = _read_varint(raw, at)
                at += length
            elif wire == 5:
                at += 4
            else:
                return None
            if at > len(raw):
                return None
            out.append(Token(number, wire, raw[start:at]))
    except ValueError:
        return None
    return out


def _encode(parts: list[Token]) -> bytes:
    return b"".join(_varint(t.number << 3 | t.wire) + t.body for t in parts)


def _payload(token: Token) -> bytes:
    _, at = _read_varint(token.body, 0)
    return token.body[at:]


MUTATIONS = ["flip", "truncate", "insert", "renumber", "rewire", "huge-length", "drop", "repeat", "overlong",
             "unknown-field", "nested"]


@st.composite
def mutated(draw: st.DrawFn, raw: bytes, descriptor: Descriptor | None, depth: int = 0) -> bytes:
    """``raw`` after zero to three mutations; ``nested`` recurses into a message field's bytes."""
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
        kind = draw(st.sampled_from(MUTATIONS))
        parts = tokens(raw)
        if kind == "flip" and raw:
            data = bytearray(raw)
            for _ in range(draw(st.integers(1, 4))):
                data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
            raw = bytes(data)
        elif kind == "truncate" and raw:
            raw = raw[: draw(st.integers(0, len(raw) - 1))]
        elif kind == "insert":
            at = draw(st.integers(0, len(raw)))
            raw = raw[:at] + draw(st.binary(min_size=1, max_size=12)) + raw[at:]
        elif kind == "unknown-field":
            number = draw(st.integers(1, 2**29 - 1))
            raw += _varint(number << 3 | draw(st.sampled_from([0, 1, 2, 5]))) + draw(st.binary(max_size=12))
        elif parts:
            i = draw(st.integers(0, len(parts) - 1))
            token = parts[i]
            if kind == "renumber":
                known = [f.number for f in descriptor.fields] if descriptor is not None else []
                number = draw(st.sampled_from(known) | st.integers(1, 2**29 - 1)) if known else 1
                parts[i] = token._replace(number=number)
            elif kind == "rewire":
                parts[i] = token._replace(wire=draw(st.sampled_from([w for w in range(8) if w != token.wire])))
            elif kind == "huge-length" and token.wire == 2:
                length = draw(st.sampled_from([2**31, 2**32, 2**63 - 1, 2**64 - 1, len(token.body) + 1]))
                parts[i] = token._replace(body=_varint(length) + _payload(token))
            elif kind == "drop":
                del parts[i]
            elif kind == "repeat":
                parts.insert(i, token)
            elif kind == "overlong" and token.wire == 0:
                value, _ = _read_varint(token.body, 0)
                parts[i] = token._replace(body=bytes(b | 0x80 for b in _varint(value)) + b"\x80" * 3 + b"\x00")
            elif kind == "nested" and token.wire == 2 and depth < 3:
                inner_type = _field_message(descriptor, token.number)
                inner = draw(mutated(_payload(token), inner_type, depth + 1))
                parts[i] = token._replace(body=_varint(len(inner)) + inner)
            raw = _encode(parts)
    return raw


def _field_message(descriptor: Descriptor | None, number: int) -> Descriptor | None:
    if descriptor is None:
        return None
    field = descriptor.fields_by_number.get(number)
    return None if field is None else field.message_type


# --- the runs -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Tally:
    """What the fuzz sent and how the server answered, for the closing summary."""

    cases: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    codes: collections.Counter[tuple[str, str]] = dataclasses.field(default_factory=collections.Counter)
    seconds: float = 0.0


TALLY = Tally()


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[tuple[Any, Stubs, grpc.Channel]]:
    server = start_server([varied_app(), extras_app()])
    stubs = compile_stubs(server.proto_text)
    channel = grpc.insecure_channel(server.address)
    try:
        yield server, stubs, channel
    finally:
        channel.close()
        server.stop()


def test_every_model_is_fuzzed(fuzzed: tuple[Any, Stubs, grpc.Channel]) -> None:
    _, stubs, _ = fuzzed
    served = [m.name for m in stubs.pb2.DESCRIPTOR.services_by_name["InferenceService"].methods]
    assert sorted(served) == sorted(RPCS), "add a good request to GOOD for every rpc"


def _check(rpc: str, future: Any, raw: bytes, response_type: Any) -> str:
    code = future.code()
    details = future.details() or ""
    assert code in ALLOWED, f"{rpc}: {code.name} {details[:300]!r} for request {raw[:200].hex()}"
    assert len(details) <= MAX_DETAILS, f"{rpc}: {len(details)}-character status message {details[:200]!r}"
    if code == grpc.StatusCode.OK:
        response_type.FromString(future.result())
    return str(code.name)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # models given huge floats
@pytest.mark.parametrize("rpc", RPCS)
def test_fuzzed_requests_get_a_proper_status_and_the_server_keeps_serving(
    fuzzed: tuple[Any, Stubs, grpc.Channel], rpc: str
) -> None:
    _, stubs, channel = fuzzed
    method = stubs.pb2.DESCRIPTOR.services_by_name["InferenceService"].methods_by_name[rpc]
    call = channel.unary_unary(f"/{SERVICE}/{rpc}", request_serializer=None, response_deserializer=None)
    response_type = GetMessageClass(method.output_type)
    seeds = st.builds(GOOD[rpc], st.just(stubs.pb2)).flatmap(tweaked)
    one = st.one_of(messages(method.input_type), seeds, seeds).flatmap(
        lambda m: mutated(m.SerializeToString(), method.input_type)
    )
    started = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=(Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck))
    @given(batch=st.lists(one, min_size=1, max_size=3))
    def run(batch: list[bytes]) -> None:
        futures = [(raw, call.future(raw, timeout=CALL_TIMEOUT)) for raw in batch]
        for raw, future in futures:
            TALLY.cases[rpc] += 1
            TALLY.codes[rpc, _check(rpc, future, raw, response_type)] += 1

    run()
    TALLY.seconds += time.monotonic() - started
    _still_serving(channel, stubs, rpc)


def _still_serving(channel: grpc.Channel, stubs: Stubs, rpc: str) -> None:
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    stub = stubs.pb2_grpc.InferenceServiceStub(channel)
    good: Callable[..., Any] = getattr(stub, rpc)
    good(GOOD[rpc](stubs.pb2), timeout=CALL_TIMEOUT)
    assert stub.PredictAdd(stubs.pb2.AddRequest(a=1, b=2), timeout=CALL_TIMEOUT).result == 3


def test_fuzz_summary(capsys: pytest.CaptureFixture[str], record_property: Callable[[str, object], None]) -> None:
    """Runs last in this module: how many cases went out, and how they were answered."""
    total = sum(TALLY.cases.values())
    record_property("fuzz_cases", total)
    by_code: collections.Counter[str] = collections.Counter()
    for (rpc, code), count in sorted(TALLY.codes.items()):
        by_code[code] += count
        record_property(f"fuzz_{rpc}_{code}", count)
    with capsys.disabled():
        codes = ", ".join(f"{code} {count}" for code, count in by_code.most_common())
        print(f"\nfuzz: {total} requests to {len(TALLY.cases)} rpcs in {TALLY.seconds:.1f} s ({codes})")
    if len(TALLY.cases) == len(RPCS):  # the whole module ran, not a selection
        assert total >= len(RPCS) * EXAMPLES
