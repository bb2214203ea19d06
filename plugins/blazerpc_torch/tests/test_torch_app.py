"""``torch.Tensor`` models in an app, served over a real socket and called with grpcio stubs.

No ``from __future__ import annotations`` here: the annotations hold dtype and dimension
names (``"bfloat16"``) that linters would otherwise take for quoted types.
"""

import ctypes
import types
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import grpc
import numpy as np
import pytest
import torch
from blazerpc_torch import TorchTensor
from blazerpc_torch.tensors import TORCH, TorchTensorSpec
from torch_helpers import from_tensor, to_tensor
from torch_models import mlp

from blazerpc_core import BlazeApp, RegistrationError
from blazerpc_core.testing import BatchRecorder


def _stub(server: Any, stubs: Any, channel: grpc.Channel) -> Any:
    return stubs.pb2_grpc.InferenceServiceStub(channel)


def test_module_called_with_tensors_under_inference_mode(blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    app = BlazeApp()
    net = mlp()
    seen: dict[str, Any] = {}

    @app.model("classify")
    def classify(x: torch.Tensor) -> torch.Tensor:  # batch dimension first
        seen.update(type=type(x), dtype=x.dtype, inference=torch.is_inference_mode_enabled(), device=x.device)
        return net(x)

    server = blazerpc_serve(app)
    stubs = blazerpc_stubs(server)
    x = torch.randn(3, 512)
    with grpc.insecure_channel(server.address) as channel:
        reply = _stub(server, stubs, channel).PredictClassify(stubs.pb2.ClassifyRequest(x=to_tensor(stubs.pb2, x)))
    with torch.no_grad():
        expected = net(x)
    np.testing.assert_allclose(from_tensor(reply.result).numpy(), expected.numpy(), rtol=1e-6)
    assert seen == {"type": torch.Tensor, "dtype": torch.float32, "inference": True, "device": torch.device("cpu")}
    assert "TensorProto x = 1" in server.proto_text


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.bool]


@pytest.mark.parametrize("dtype", DTYPES, ids=[str(d).removeprefix("torch.") for d in DTYPES])
def test_dtype_round_trip(dtype: torch.dtype, blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    app = BlazeApp()
    received: list[torch.dtype] = []

    @app.model("same")
    def same(x: torch.Tensor) -> torch.Tensor:
        received.append(x.dtype)
        return x.clone()

    server = blazerpc_serve(app)
    stubs = blazerpc_stubs(server)
    x = (torch.arange(12).reshape(3, 4) % 3 - 1).to(dtype)
    with grpc.insecure_channel(server.address) as channel:
        reply = _stub(server, stubs, channel).PredictSame(stubs.pb2.SameRequest(x=to_tensor(stubs.pb2, x)))
    assert received == [dtype]
    assert reply.result.dtype == str(dtype).removeprefix("torch.")
    assert torch.equal(from_tensor(reply.result), x)


def test_declared_dtype_and_shape(blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    app = BlazeApp()

    @app.model("scale")
    def scale(x: TorchTensor[torch.float32, None, 4]) -> TorchTensor[torch.float16, None, 4]:
        return x * 2  # float32; sent as the declared float16

    server = blazerpc_serve(app)
    stubs = blazerpc_stubs(server)
    pb2 = stubs.pb2
    with grpc.insecure_channel(server.address) as channel:
        call = _stub(server, stubs, channel).PredictScale
        reply = call(pb2.ScaleRequest(x=to_tensor(pb2, torch.ones(2, 4))))
        assert reply.result.dtype == "float16"
        assert torch.equal(from_tensor(reply.result), torch.full((2, 4), 2.0, dtype=torch.float16))
        bad = {
            "float64": (pb2.ScaleRequest(x=to_tensor(pb2, torch.ones(2, 4, dtype=torch.float64))), "expected float32"),
            "int64": (pb2.ScaleRequest(x=to_tensor(pb2, torch.ones(2, 4, dtype=torch.int64))), "expected float32"),
            "unknown": (pb2.ScaleRequest(x=pb2.TensorProto(shape=[1], dtype="float128x", data=b"\0" * 16)),
                        "'float128x'"),
            "no dtype": (pb2.ScaleRequest(x=pb2.TensorProto(shape=[1, 4], data=b"\0" * 16)), "no dtype"),
            "dimension": (pb2.ScaleRequest(x=to_tensor(pb2, torch.ones(2, 5))), "dimension 1 is 5"),
            "rank": (pb2.ScaleRequest(x=to_tensor(pb2, torch.ones(4))), "rank"),
            "length": (pb2.ScaleRequest(x=pb2.TensorProto(shape=[2, 4], dtype="float32", data=b"\0" * 12)), "bytes"),
            "negative": (pb2.ScaleRequest(x=pb2.TensorProto(shape=[-2, 4], dtype="float32")), "negative"),
            "missing": (pb2.ScaleRequest(), "missing"),
        }
        for case, (request, fragment) in bad.items():
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
            assert fragment in info.value.details(), (case, info.value.details())


def test_bfloat16_only_model_refuses_float32(blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    app = BlazeApp()

    @app.model("half")
    def half(x: TorchTensor["bfloat16", -1]) -> TorchTensor["bfloat16", -1]:
        return x / 2

    server = blazerpc_serve(app)
    stubs = blazerpc_stubs(server)
    x = torch.tensor([1.0, 3.0, -8.0], dtype=torch.bfloat16)
    with grpc.insecure_channel(server.address) as channel:
        call = _stub(server, stubs, channel).PredictHalf
        reply = call(stubs.pb2.HalfRequest(x=to_tensor(stubs.pb2, x)))
        assert torch.equal(from_tensor(reply.result), x / 2)
        with pytest.raises(grpc.RpcError) as info:
            call(stubs.pb2.HalfRequest(x=to_tensor(stubs.pb2, x.float())))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "dtype is float32, expected bfloat16" in info.value.details()


class Split(NamedTuple):
    low: torch.Tensor
    high: torch.Tensor


def test_several_tensors_in_and_out(blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    app = BlazeApp()

    @app.model("split")
    def split(x: torch.Tensor, at: float, weights: list[torch.Tensor]) -> Split:
        total = x + sum(weights)
        return Split(low=total.clamp(max=at), high=total.clamp(min=at))

    server = blazerpc_serve(app)
    stubs = blazerpc_stubs(server)
    pb2 = stubs.pb2
    x = torch.linspace(-2, 2, 8)
    weights = [torch.ones(8), torch.full((8,), 0.5)]
    request = pb2.SplitRequest(x=to_tensor(pb2, x), at=1.0, weights=[to_tensor(pb2, w) for w in weights])
    with grpc.insecure_channel(server.address) as channel:
        reply = _stub(server, stubs, channel).PredictSplit(request)
    assert torch.equal(from_tensor(reply.low), (x + 1.5).clamp(max=1.0))
    assert torch.equal(from_tensor(reply.high), (x + 1.5).clamp(min=1.0))


def test_model_failure_is_internal_and_server_survives(blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    app = BlazeApp()
    net = torch.nn.Linear(4, 2).eval()

    @app.model("linear")
    def linear(x: torch.Tensor) -> torch.Tensor:
        return net(x)

    server = blazerpc_serve(app)
    stubs = blazerpc_stubs(server)
    with grpc.insecure_channel(server.address) as channel:
        call = _stub(server, stubs, channel).PredictLinear
        with pytest.raises(grpc.RpcError) as info:
            call(stubs.pb2.LinearRequest(x=to_tensor(stubs.pb2, torch.ones(2, 5))))
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "RuntimeError" in info.value.details()
        reply = call(stubs.pb2.LinearRequest(x=to_tensor(stubs.pb2, torch.ones(2, 4))))
    assert list(reply.result.shape) == [2, 2]


def test_concurrent_clients_are_batched_with_torch_cat(blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    requests = 12
    recorder = BatchRecorder(expected=requests)
    net = mlp()
    calls: list[int] = []
    app = BlazeApp()

    @app.model("classify", batch=True, max_batch_size=64, batch_timeout_ms=50)
    def classify(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        recorder.gate.wait(60)  # hold the first batch until every request is queued
        return net(x)

    server = blazerpc_serve(app, plugins=[recorder])
    stubs = blazerpc_stubs(server)
    inputs = [torch.randn(1 + i % 3, 512) for i in range(requests)]
    with grpc.insecure_channel(server.address) as channel:
        call = _stub(server, stubs, channel).PredictClassify

        def one(x: torch.Tensor) -> torch.Tensor:
            return from_tensor(call(stubs.pb2.ClassifyRequest(x=to_tensor(stubs.pb2, x)), timeout=120).result)

        with ThreadPoolExecutor(requests) as pool:
            results = list(pool.map(one, inputs))
    with torch.no_grad():
        for x, got in zip(inputs, results, strict=True):
            np.testing.assert_allclose(got.numpy(), net(x).numpy(), rtol=1e-5, atol=1e-6)
    assert sum(calls) == sum(x.shape[0] for x in inputs)
    assert len(calls) < requests
    assert sum(rows for rows, _ in recorder.batches) == sum(calls)


def test_bare_tensor_is_batched_only_when_asked(blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    requests = 6
    recorder = BatchRecorder(expected=requests)  # the batcher reports every batch, even of one request
    app = BlazeApp()

    @app.model("double")
    def double(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    server = blazerpc_serve(app, plugins=[recorder])
    stubs = blazerpc_stubs(server)
    with grpc.insecure_channel(server.address) as channel:
        call = _stub(server, stubs, channel).PredictDouble
        with ThreadPoolExecutor(requests) as pool:
            list(pool.map(lambda i: call(stubs.pb2.DoubleRequest(x=to_tensor(stubs.pb2, torch.ones(2))), timeout=60),
                          range(requests)))
    assert recorder.batches == []


def test_unknown_device_is_refused_at_build(blazerpc_serve: Any) -> None:
    app = BlazeApp()

    @app.model("same")
    def same(x: torch.Tensor) -> torch.Tensor:
        return x

    # The device is resolved with the model's runner, while the server starts: it does not start.
    with pytest.raises(RuntimeError, match="torch device 'warp:0'"):
        blazerpc_serve(app, extra={"torch_device": "warp:0"})


def test_bad_annotations_are_refused_at_registration() -> None:
    with pytest.raises(RegistrationError, match="needs a dtype"):
        TorchTensor[()]
    with pytest.raises(RegistrationError, match="not a tensor dtype"):
        TorchTensor["float99"]
    with pytest.raises(RegistrationError, match="negative"):
        TorchTensor[torch.float32, -3]


def test_decoded_tensor_shares_the_request_bytes() -> None:
    any_tensor = TorchTensorSpec(None, None)
    data = np.arange(6, dtype=np.float32).tobytes()
    message = types.SimpleNamespace(shape=[2, 3], dtype="float32", data=data)  # what decoding reads
    tensor = TORCH.decode(message, any_tensor)
    assert tensor.data_ptr() == ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    assert tensor.tolist() == [[0, 1, 2], [3, 4, 5]]
    one_byte = TORCH.decode(types.SimpleNamespace(shape=[1], dtype="uint8", data=b"\x07"), any_tensor)
    assert one_byte.tolist() == [7]  # copied: CPython shares one-byte bytes objects
    empty = TORCH.decode(types.SimpleNamespace(shape=[0, 3], dtype="int64", data=b""), any_tensor)
    assert empty.shape == (0, 3) and empty.dtype == torch.int64
