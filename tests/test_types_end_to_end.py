"""Every type of the type table, called over a real socket with stubs compiled from `blazerpc proto`."""

from __future__ import annotations

import numpy as np
import pytest

from blazerpc_core.testing import array_from_proto, tensor_proto
from tests.apps import varied_app


@pytest.fixture
def client(blazerpc_serve, blazerpc_connect):
    conn = blazerpc_connect(blazerpc_serve(varied_app()))
    return conn.pb2, conn.stub


def test_float_is_a_double_and_the_sum_is_exact(client):
    pb2, stub = client
    assert stub.PredictAdd(pb2.AddRequest(a=0.1, b=0.2)).result == 0.1 + 0.2


def test_scalars_and_bytes(client):
    pb2, stub = client
    reply = stub.PredictEchoScalars(pb2.EchoScalarsRequest(s="hé", i=-(2**40), flag=True, raw=b"\x00\xff"))
    assert reply.result == f"hé|{-(2**40)}|True|00ff"


def test_lists(client):
    pb2, stub = client
    assert list(stub.PredictCountWords(pb2.CountWordsRequest(texts=["a b", "", "c d e"])).result) == [2, 0, 3]


def test_optional_distinguishes_absent_from_zero(client):
    pb2, stub = client
    assert stub.PredictMaybe(pb2.MaybeRequest()).result == "none"
    assert stub.PredictMaybe(pb2.MaybeRequest(x=0)).result == "got 0"


def test_maps(client):
    pb2, stub = client
    reply = stub.PredictWeights(pb2.WeightsRequest(scores={"a": 1.0, "b": 3.0}))
    assert dict(reply.result) == {"a": 0.25, "b": 0.75}


def test_enums_use_prefixed_values(client):
    pb2, stub = client
    reply = stub.PredictNextColor(pb2.NextColorRequest(color=pb2.COLOR_BLUE))
    assert reply.result == pb2.COLOR_RED


def test_dataclass_inputs_and_namedtuple_output_become_fields(client):
    pb2, stub = client
    reply = stub.PredictArea(
        pb2.AreaRequest(box=pb2.Box(x=2, y=3, label="a"), boxes=[pb2.Box(x=1, y=1, label="b")])
    )
    assert (reply.total, reply.count, list(reply.labels)) == (7.0, 2, ["a", "b"])


def test_dataclass_output_and_default_parameter(client):
    pb2, stub = client
    box = pb2.Box(x=1, y=2, label="q")
    assert stub.PredictShift(pb2.ShiftRequest(box=box)).x == 2.5
    assert stub.PredictShift(pb2.ShiftRequest(box=box, dx=0)).x == 1.0
    assert stub.PredictShift(pb2.ShiftRequest(box=box)).label == "Q"


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32", "int64", "uint8", "bool"])
def test_plain_ndarray_keeps_dtype_and_shape(client, dtype):
    pb2, stub = client
    x = (np.arange(24).reshape(2, 3, 4) % 2).astype(dtype)
    out = array_from_proto(stub.PredictFlip(pb2.FlipRequest(x=tensor_proto(pb2, x))).result)
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, x[::-1])


def test_typed_tensor(client):
    pb2, stub = client
    x = np.arange(24, dtype=np.float32).reshape(3, 8)
    out = array_from_proto(stub.PredictClassify(pb2.ClassifyRequest(x=tensor_proto(pb2, x))).result)
    np.testing.assert_array_equal(out, x[:, :2] * 2)


def test_versions_side_by_side(client):
    pb2, stub = client
    assert stub.PredictVersionMe(pb2.VersionMeRequest(x=10)).result == 12
    assert stub.PredictVersionMeV1(pb2.VersionMeV1Request(x=10)).result == 11
    assert stub.PredictVersionMeV2(pb2.VersionMeV2Request(x=10)).result == 12


def test_returned_arrays_travel_under_their_wire_name_whatever_their_byte_order_or_alias(
    blazerpc_serve, blazerpc_connect
):
    """A model may return big-endian arrays or C-type aliases (longlong, intc, single): each goes out
    little-endian under its plain name. One a client could not read back is INTERNAL, not garbage."""
    import grpc

    from blazerpc_core import BlazeApp

    values = {
        "big": np.array([1.5, -2.0], dtype=">f8"),
        "longlong": np.array([1, 2], dtype=np.longlong),
        "intc": np.array([3, 4], dtype=np.intc),
        "single": np.array([5.0], dtype=np.single),
        "bool": np.array([True, False]),
        "longdouble": np.array([1.0], dtype=np.longdouble),
        "datetime": np.array(["2026-11-30"], dtype="datetime64[D]"),
        "text": np.array(["a"]),
    }
    app = BlazeApp()

    @app.model("give")
    def give(kind: str) -> np.ndarray:
        return values[kind]

    conn = blazerpc_connect(blazerpc_serve(app))
    expected = {"big": "float64", "longlong": "int64", "intc": "int32", "single": "float32", "bool": "bool"}
    for kind, name in expected.items():
        answer = conn.stub.PredictGive(conn.pb2.GiveRequest(kind=kind), timeout=10).result
        assert answer.dtype == name
        np.testing.assert_array_equal(array_from_proto(answer), values[kind])
    for kind in ("longdouble", "datetime", "text"):
        with pytest.raises(grpc.RpcError) as refused:
            conn.stub.PredictGive(conn.pb2.GiveRequest(kind=kind), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INTERNAL
        assert "cannot travel in a TensorProto" in refused.value.details()
