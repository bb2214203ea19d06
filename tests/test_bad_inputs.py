"""Malformed requests get a status a person can act on, and the server keeps serving.

Tried: garbage bytes, truncated protobuf, wrong dtype, unknown dtype, object dtype, short and long
tensor data, wrong rank, wrong fixed dimension, negative dimension, missing tensor, missing nested
message, enum number out of range, unknown method, a model that raises, a model returning the wrong
shape or an unencodable value, and hidden error details.
"""

from __future__ import annotations

import concurrent.futures

import grpc
import numpy as np
import pytest

from blazerpc_core import BlazeApp, InvalidArgument, TensorInput, TensorOutput
from tests.apps import Box, Color

BAD = grpc.StatusCode.INVALID_ARGUMENT


def _app() -> BlazeApp:
    app = BlazeApp()

    @app.model("classify")
    def classify(x: TensorInput[np.float32, "batch", 4]) -> TensorOutput[np.float32, "batch", 2]:
        return x[:, :2]

    @app.model("broken-shape")
    def broken_shape(x: TensorInput[np.float32, None, 4]) -> TensorOutput[np.float32, None, 2]:
        return x  # four columns where two are declared

    @app.model("divide")
    def divide(a: float, b: float) -> float:
        return a / b

    @app.model("validate")
    def validate(text: str) -> str:
        if not text:
            raise InvalidArgument("text must not be empty")
        return text

    @app.model("bad-output")
    def bad_output(x: int) -> int:
        return "not a number"  # type: ignore[return-value]

    @app.model("color")
    def color(c: Color) -> str:
        return c.name

    @app.model("box")
    def box(b: Box) -> float:
        return b.x

    return app


@pytest.fixture
def client(blazerpc_serve, blazerpc_connect):
    conn = blazerpc_connect(blazerpc_serve(_app()))
    return conn.pb2, conn.stub, conn.channel


def _status(call, *args):
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=5)
    return info.value.code(), info.value.details()


def _tensor(pb2, shape, dtype="float32", data=None):
    if data is None:
        data = np.zeros(shape, dtype=dtype).tobytes()
    return pb2.TensorProto(shape=shape, dtype=dtype, data=data)


def _still_serving(pb2, stub):
    x = np.ones((1, 4), np.float32)
    reply = stub.PredictClassify(pb2.ClassifyRequest(x=_tensor(pb2, [1, 4], data=x.tobytes())), timeout=5)
    assert list(reply.result.shape) == [1, 2]


@pytest.mark.parametrize(
    "payload", [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x12\x80"], ids=["garbage", "truncated", "bad-varint"]
)
def test_undecodable_bytes_are_invalid_argument(client, payload):
    pb2, stub, channel = client
    code, details = _status(channel.unary_unary("/blazerpc.InferenceService/PredictClassify"), payload)
    assert code == BAD and "could not be decoded" in details
    _still_serving(pb2, stub)


@pytest.mark.parametrize(
    ("shape", "dtype", "data", "expected"),
    [
        ([1, 4], "float64", None, "dtype is float64, expected float32"),
        ([1, 4], "complex-ish", b"", "unknown dtype"),
        ([1, 4], "object", b"", "unknown dtype 'object'"),
        ([1, 4], "float32", b"\x00" * 15, "data has 15 bytes"),
        ([1, 4], "float32", b"\x00" * 17, "data has 17 bytes"),
        ([4], "float32", None, "rank 1"),
        ([1, 5], "float32", None, "dimension 1 is 5, expected 4"),
        ([-1, 4], "float32", b"", "negative dimension"),
    ],
    ids=["wrong-dtype", "unknown-dtype", "object-dtype", "short-data", "long-data", "wrong-rank",
         "wrong-fixed-dim", "negative-dim"],
)
def test_bad_tensors_are_invalid_argument(client, shape, dtype, data, expected):
    pb2, stub, _ = client
    code, details = _status(stub.PredictClassify, pb2.ClassifyRequest(x=_tensor(pb2, shape, dtype, data)))
    assert code == BAD, details
    assert expected in details and "input 'x'" in details
    _still_serving(pb2, stub)


def test_missing_inputs_are_invalid_argument(client):
    pb2, stub, _ = client
    assert _status(stub.PredictClassify, pb2.ClassifyRequest()) == (BAD, "missing input 'x'")
    assert _status(stub.PredictBox, pb2.BoxRequest()) == (BAD, "missing input 'b'")


def test_enum_number_out_of_range(client):
    pb2, stub, _ = client
    code, details = _status(stub.PredictColor, pb2.ColorRequest(c=7))
    assert code == BAD and "not a value of enum Color" in details


def test_unknown_method_is_unimplemented(client):
    _, _, channel = client
    code, _ = _status(channel.unary_unary("/blazerpc.InferenceService/PredictNothing"), b"")
    assert code == grpc.StatusCode.UNIMPLEMENTED


def test_a_model_that_raises_is_internal_with_type_and_message(client):
    pb2, stub, _ = client
    code, details = _status(stub.PredictDivide, pb2.DivideRequest(a=1, b=0))
    assert code == grpc.StatusCode.INTERNAL
    assert details == "model 'divide' version '1' raised ZeroDivisionError: float division by zero"
    _still_serving(pb2, stub)


def test_a_model_can_raise_invalid_argument_itself(client):
    pb2, stub, _ = client
    assert _status(stub.PredictValidate, pb2.ValidateRequest(text="")) == (BAD, "text must not be empty")


def test_outputs_that_break_the_declaration_are_internal_naming_the_model(client):
    pb2, stub, _ = client
    code, details = _status(stub.PredictBrokenShape, pb2.BrokenShapeRequest(x=_tensor(pb2, [1, 4])))
    assert code == grpc.StatusCode.INTERNAL and "'broken-shape'" in details and "expected 2" in details
    code, details = _status(stub.PredictBadOutput, pb2.BadOutputRequest(x=1))
    assert code == grpc.StatusCode.INTERNAL and "'bad-output'" in details


def test_bad_requests_do_not_disturb_concurrent_good_ones(client):
    pb2, stub, channel = client
    raw = channel.unary_unary("/blazerpc.InferenceService/PredictClassify")
    good = pb2.ClassifyRequest(x=_tensor(pb2, [2, 4], data=np.ones((2, 4), np.float32).tobytes()))

    def good_call(_):
        return list(stub.PredictClassify(good, timeout=10).result.shape)

    def bad_call(_):
        with pytest.raises(grpc.RpcError):
            raw(b"\xff\xff", timeout=10)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        bads = [pool.submit(bad_call, i) for i in range(40)]
        goods = list(pool.map(good_call, range(40)))
        for f in bads:
            f.result()
    assert goods == [[2, 2]] * 40


def test_hidden_error_details(blazerpc_serve, blazerpc_connect):
    conn = blazerpc_connect(blazerpc_serve(_app(), hide_error_details=True))
    code, details = _status(conn.stub.PredictDivide, conn.pb2.DivideRequest(a=1, b=0))
    assert code == grpc.StatusCode.INTERNAL
    assert "ZeroDivisionError" not in details and "'divide'" in details
