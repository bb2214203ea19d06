"""ONNX graphs served in-process over a real socket, called with grpcio stubs."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import blazerpc_onnx
import grpc
import numpy as np
import onnxruntime
import pytest
from onnx_models import build_identity, build_mlp, build_string_input, build_two_heads, mlp_reference

from blazerpc_core import BlazeApp, RegistrationError
from blazerpc_core.testing import BatchRecorder, array_from_proto, tensor_proto


def _serve(blazerpc_serve: Any, blazerpc_stubs: Any, *specs: Any) -> tuple[Any, Any, Any]:
    app = BlazeApp()
    for spec in specs:
        app.add(spec)
    server = blazerpc_serve(app)
    stubs = blazerpc_stubs(server)
    return server, stubs.pb2, stubs.pb2_grpc


def test_mlp_matches_onnxruntime(tmp_path: Path, blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    path = build_mlp(tmp_path / "mlp.onnx")
    server, pb2, pb2_grpc = _serve(blazerpc_serve, blazerpc_stubs, blazerpc_onnx.load_model(path, name="classify"))
    x = np.random.default_rng(1).standard_normal((3, 512)).astype(np.float32)
    with grpc.insecure_channel(server.address) as channel:
        reply = pb2_grpc.InferenceServiceStub(channel).PredictClassify(pb2.ClassifyRequest(x=tensor_proto(pb2, x)))
    got = array_from_proto(reply.result)
    assert reply.result.dtype == "float32" and got.shape == (3, 10)
    direct = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, direct, rtol=1e-6)
    np.testing.assert_allclose(got, mlp_reference(x), rtol=1e-4, atol=1e-5)


def test_multi_input_multi_output_fields_follow_the_graph(
    tmp_path: Path, blazerpc_serve: Any, blazerpc_stubs: Any
) -> None:
    spec = blazerpc_onnx.load_model(build_two_heads(tmp_path / "two_heads.onnx"))
    assert spec.name == "two_heads"
    server, pb2, pb2_grpc = _serve(blazerpc_serve, blazerpc_stubs, spec)
    assert [f.name for f in pb2.TwoHeadsRequest.DESCRIPTOR.fields] == ["features_0", "offset", "ids"]
    assert [f.name for f in pb2.TwoHeadsResponse.DESCRIPTOR.fields] == ["sum", "count"]
    features = np.arange(6, dtype=np.float32).reshape(2, 3)
    offset = np.full((2, 3), 0.5, dtype=np.float32)
    ids = np.array([4, -7], dtype=np.int64)
    request = pb2.TwoHeadsRequest(
        features_0=tensor_proto(pb2, features), offset=tensor_proto(pb2, offset), ids=tensor_proto(pb2, ids)
    )
    with grpc.insecure_channel(server.address) as channel:
        reply = pb2_grpc.InferenceServiceStub(channel).PredictTwoHeads(request)
    np.testing.assert_allclose(array_from_proto(reply.sum), features + offset)
    np.testing.assert_array_equal(array_from_proto(reply.count), ids * 2)
    assert reply.count.dtype == "int64"


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32", "int64", "bool", "int8", "uint8"])
def test_dtype_round_trip(dtype: str, tmp_path: Path, blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    spec = blazerpc_onnx.load_model(build_identity(tmp_path / "identity.onnx", dtype), name="same")
    server, pb2, pb2_grpc = _serve(blazerpc_serve, blazerpc_stubs, spec)
    x = (np.arange(8).reshape(2, 4) % 3).astype(dtype)
    with grpc.insecure_channel(server.address) as channel:
        reply = pb2_grpc.InferenceServiceStub(channel).PredictSame(pb2.SameRequest(x=tensor_proto(pb2, x)))
    assert reply.result.dtype == dtype
    np.testing.assert_array_equal(array_from_proto(reply.result), x)


def _expect_invalid(call: Any, request: Any, *fragments: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    for fragment in fragments:
        assert fragment in info.value.details()


def test_bad_inputs_are_invalid_argument(tmp_path: Path, blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    path = build_mlp(tmp_path / "mlp.onnx")
    server, pb2, pb2_grpc = _serve(blazerpc_serve, blazerpc_stubs, blazerpc_onnx.load_model(path, name="classify"))
    good = np.zeros((2, 512), dtype=np.float32)
    with grpc.insecure_channel(server.address) as channel:
        call = pb2_grpc.InferenceServiceStub(channel).PredictClassify
        # float64 into a float32 graph: named, not converted.
        _expect_invalid(call, pb2.ClassifyRequest(x=tensor_proto(pb2, good.astype(np.float64))), "float64", "float32")
        # A dtype no tensor has.
        bad = pb2.TensorProto(shape=[2, 512], dtype="complex-ish", data=good.tobytes())
        _expect_invalid(call, pb2.ClassifyRequest(x=bad), "dtype")
        # Fixed dimension 512 is checked before onnxruntime runs.
        _expect_invalid(call, pb2.ClassifyRequest(x=tensor_proto(pb2, np.zeros((2, 511), np.float32))), "511", "512")
        _expect_invalid(call, pb2.ClassifyRequest(x=tensor_proto(pb2, np.zeros(512, np.float32))), "rank")
        short = pb2.TensorProto(shape=[2, 512], dtype="float32", data=good.tobytes()[:-4])
        _expect_invalid(call, pb2.ClassifyRequest(x=short), "bytes")
        _expect_invalid(call, pb2.ClassifyRequest(), "missing", "x")
        # The server is still fine afterwards.
        reply = call(pb2.ClassifyRequest(x=tensor_proto(pb2, good)), timeout=30)
        assert list(reply.result.shape) == [2, 10]


@pytest.mark.parametrize("batch", [None, False], ids=["batched", "unbatched"])
def test_inputs_that_disagree_on_a_symbolic_dimension_are_invalid_argument(
    batch: bool | None, tmp_path: Path, blazerpc_serve: Any, blazerpc_stubs: Any
) -> None:
    spec = blazerpc_onnx.load_model(build_two_heads(tmp_path / "two_heads.onnx"), batch=batch)
    server, pb2, pb2_grpc = _serve(blazerpc_serve, blazerpc_stubs, spec)
    # The inputs share the symbolic dimension N; onnxruntime would only fail inside the Add.
    request = pb2.TwoHeadsRequest(
        features_0=tensor_proto(pb2, np.zeros((2, 3), np.float32)),
        offset=tensor_proto(pb2, np.zeros((3, 3), np.float32)),
        ids=tensor_proto(pb2, np.zeros(2, np.int64)),
    )
    fragments = ("'offset' has 3",) if batch is None else ("'N'", "offset[0]=3")
    with grpc.insecure_channel(server.address) as channel:
        _expect_invalid(pb2_grpc.InferenceServiceStub(channel).PredictTwoHeads, request, *fragments)


def test_dynamic_first_dimension_is_batched_by_default(tmp_path: Path) -> None:
    spec = blazerpc_onnx.load_model(build_mlp(tmp_path / "mlp.onnx"))
    (_, x, _), = spec.inputs
    assert x.batch_named and x.shape == (None, 512)
    off = blazerpc_onnx.load_model(tmp_path / "mlp.onnx", batch=False)
    assert not off.inputs[0][1].batch_named and off.batching.batch is False


def test_fixed_first_dimension_is_not_batched(tmp_path: Path) -> None:
    path = build_identity(tmp_path / "fixed.onnx", "float32", shape=[2, 4])
    spec = blazerpc_onnx.load_model(path)
    assert not spec.inputs[0][1].batch_named
    with pytest.raises(RegistrationError, match="cannot be batched"):
        blazerpc_onnx.load_model(path, batch=True)


def test_open_session_can_be_served(tmp_path: Path, blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    path = build_identity(tmp_path / "identity.onnx", "int64")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(RegistrationError, match="name"):
        blazerpc_onnx.load_model(session)
    server, pb2, pb2_grpc = _serve(blazerpc_serve, blazerpc_stubs, blazerpc_onnx.load_model(session, name="ids"))
    x = np.array([[1, 2, 3, 4]], dtype=np.int64)
    with grpc.insecure_channel(server.address) as channel:
        reply = pb2_grpc.InferenceServiceStub(channel).PredictIds(pb2.IdsRequest(x=tensor_proto(pb2, x)))
    np.testing.assert_array_equal(array_from_proto(reply.result), x)


def test_unservable_graphs_and_options_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(RegistrationError, match=r"input 'text'.*tensor\(string\)"):
        blazerpc_onnx.load_model(build_string_input(tmp_path / "strings.onnx"))
    mlp = build_mlp(tmp_path / "mlp.onnx")
    with pytest.raises(RegistrationError, match="'warp-drive' is not available"):
        blazerpc_onnx.load_model(mlp, providers=["warp-drive"])
    with pytest.raises(RegistrationError, match="no such file"):
        blazerpc_onnx.load_model(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(RegistrationError, match="could not be loaded"):
        blazerpc_onnx.load_model(tmp_path / "junk.onnx")
    with pytest.raises(RegistrationError, match="--name"):
        blazerpc_onnx.load_model(mlp, name="2 fast")


def test_providers_and_threads_reach_the_session(tmp_path: Path) -> None:
    spec = blazerpc_onnx.load_model(
        build_mlp(tmp_path / "mlp.onnx"), providers=["cpu"], intra_op_threads=1, inter_op_threads=1
    )
    session = spec.func.session
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 1
    assert session.get_session_options().inter_op_num_threads == 1


def test_concurrent_clients_share_batches(tmp_path: Path, blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    requests = 10
    recorder = BatchRecorder(expected=requests)
    spec = blazerpc_onnx.load_model(build_mlp(tmp_path / "mlp.onnx"), name="classify", max_batch_size=64)
    model = spec.func
    calls: list[int] = []

    def gated(x: np.ndarray[Any, Any]) -> Any:
        calls.append(x.shape[0])
        recorder.gate.wait(60)  # hold the first batch until every request is queued
        return model(x)

    app = BlazeApp()
    app.add(dataclasses.replace(spec, func=gated))  # batched by default: no opt-in
    server = blazerpc_serve(app, plugins=[recorder])
    stubs = blazerpc_stubs(server)
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((1 + i % 3, 512)).astype(np.float32) for i in range(requests)]
    with grpc.insecure_channel(server.address) as channel:
        call = stubs.pb2_grpc.InferenceServiceStub(channel).PredictClassify

        def one(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            return array_from_proto(call(stubs.pb2.ClassifyRequest(x=tensor_proto(stubs.pb2, x)), timeout=120).result)

        with ThreadPoolExecutor(requests) as pool:
            results = list(pool.map(one, inputs))
    for x, got in zip(inputs, results, strict=True):
        np.testing.assert_allclose(got, mlp_reference(x), rtol=1e-4, atol=1e-5)
    assert sum(calls) == sum(len(x) for x in inputs)
    assert len(calls) < requests


class _CountingSession:
    """An ``InferenceSession`` that records its runs' input shapes, and may fail the first."""

    def __init__(self, session: Any, *, fail_first: bool = False) -> None:
        self.session = session
        self.runs: list[tuple[int, ...]] = []
        self.fail_first = fail_first

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    def run(self, outputs: Any, feeds: dict[str, Any]) -> Any:
        self.runs.append(next(iter(feeds.values())).shape)
        if self.fail_first and len(self.runs) == 1:
            raise RuntimeError("this graph rejects zeros")
        return self.session.run(outputs, feeds)


@pytest.mark.parametrize("fail_first", [False, True], ids=["warmed", "warm-up-fails"])
def test_the_server_warms_each_model_before_it_serves(
    fail_first: bool, tmp_path: Path, blazerpc_serve: Any, blazerpc_stubs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    spec = blazerpc_onnx.load_model(build_mlp(tmp_path / "mlp.onnx"), name="classify")
    counting = spec.func.session = _CountingSession(spec.func.session, fail_first=fail_first)
    server, pb2, pb2_grpc = _serve(blazerpc_serve, blazerpc_stubs, spec)
    # Started (health SERVING) means warmed: one run on zeros, dynamic dimensions of size 1.
    assert counting.runs == [(1, 512)]
    assert ("warm-up of ONNX model classify skipped" in caplog.text) is fail_first
    x = np.ones((2, 512), dtype=np.float32)
    with grpc.insecure_channel(server.address) as channel:
        reply = pb2_grpc.InferenceServiceStub(channel).PredictClassify(pb2.ClassifyRequest(x=tensor_proto(pb2, x)))
    np.testing.assert_allclose(array_from_proto(reply.result), mlp_reference(x), rtol=1e-4, atol=1e-5)
    assert counting.runs == [(1, 512), (2, 512)]
