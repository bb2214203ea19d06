"""``tf.Tensor`` models in an app (Keras, tf.function), over a real socket with grpcio stubs.

No ``from __future__ import annotations`` here: the annotations hold dimension names
(``"batch"``) that linters would otherwise take for quoted types.
"""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from blazerpc_tf import TFTensor
from tf_models import dense

from blazerpc_core import BlazeApp, RegistrationError
from blazerpc_core.testing import BatchRecorder, array_from_proto, tensor_proto


def test_keras_model_called_with_eager_tensors(blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    app = BlazeApp()
    model = dense()
    seen: dict[str, Any] = {}

    @app.model("classify")
    def classify(x: tf.Tensor) -> tf.Tensor:  # batch dimension first
        seen.update(tensor=isinstance(x, tf.Tensor), eager=tf.executing_eagerly(), dtype=x.dtype)
        return model(x, training=False)

    server = blazerpc_serve(app)
    stubs = blazerpc_stubs(server)
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    with grpc.insecure_channel(server.address) as channel:
        reply = stubs.pb2_grpc.InferenceServiceStub(channel).PredictClassify(
            stubs.pb2.ClassifyRequest(x=tensor_proto(stubs.pb2, x))
        )
    np.testing.assert_allclose(array_from_proto(reply.result), model(x, training=False).numpy(), rtol=1e-6)
    assert seen == {"tensor": True, "eager": True, "dtype": tf.float32}


def test_tf_function_compiled_model(blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    model = dense(seed=1)

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32)])
    def compiled(x: Any) -> Any:
        return tf.nn.softmax(model(x, training=False))

    app = BlazeApp()

    @app.model("probabilities")
    def probabilities(x: TFTensor[tf.float32, None, 8]) -> TFTensor[tf.float32, None, 3]:
        return compiled(x)

    server = blazerpc_serve(app)
    stubs = blazerpc_stubs(server)
    with grpc.insecure_channel(server.address) as channel:
        call = stubs.pb2_grpc.InferenceServiceStub(channel).PredictProbabilities
        for rows in (1, 5):  # one traced graph serves every batch size
            x = np.random.default_rng(rows).standard_normal((rows, 8)).astype(np.float32)
            reply = call(stubs.pb2.ProbabilitiesRequest(x=tensor_proto(stubs.pb2, x)))
            np.testing.assert_allclose(array_from_proto(reply.result), compiled(x).numpy(), rtol=1e-6)
    assert len(compiled.get_concrete_function().graph.inputs) >= 1


DTYPES = ["float32", "float64", "float16", "bfloat16", "int32", "int64", "bool"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_round_trip(dtype: str, blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    app = BlazeApp()
    received: list[Any] = []

    @app.model("same")
    def same(x: tf.Tensor) -> tf.Tensor:
        received.append(x.dtype)
        return tf.identity(x)

    server = blazerpc_serve(app)
    stubs = blazerpc_stubs(server)
    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    x = (np.arange(12).reshape(3, 4) % 3 - 1).astype(np_dtype)
    with grpc.insecure_channel(server.address) as channel:
        call = stubs.pb2_grpc.InferenceServiceStub(channel).PredictSame
        reply = call(stubs.pb2.SameRequest(x=tensor_proto(stubs.pb2, x)))
    assert [d.name for d in received] == [dtype]
    assert reply.result.dtype == dtype
    np.testing.assert_array_equal(array_from_proto(reply.result), x)


def test_declared_dtype_and_shape(blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    app = BlazeApp()

    @app.model("scale")
    def scale(x: TFTensor[tf.float32, None, 4]) -> TFTensor[tf.float16, None, 4]:
        return x * 2  # float32; sent as the declared float16

    server = blazerpc_serve(app)
    stubs = blazerpc_stubs(server)
    pb2 = stubs.pb2
    with grpc.insecure_channel(server.address) as channel:
        call = stubs.pb2_grpc.InferenceServiceStub(channel).PredictScale
        reply = call(pb2.ScaleRequest(x=tensor_proto(pb2, np.ones((2, 4), np.float32))))
        assert reply.result.dtype == "float16"
        np.testing.assert_array_equal(array_from_proto(reply.result), np.full((2, 4), 2, np.float16))
        bad = {
            "float64": (pb2.ScaleRequest(x=tensor_proto(pb2, np.ones((2, 4)))), "expected float32"),
            "unknown": (pb2.ScaleRequest(x=pb2.TensorProto(shape=[1], dtype="float128x", data=b"\0" * 16)),
                        "'float128x'"),
            "dimension": (pb2.ScaleRequest(x=tensor_proto(pb2, np.ones((2, 5), np.float32))), "dimension 1 is 5"),
            "length": (pb2.ScaleRequest(x=pb2.TensorProto(shape=[2, 4], dtype="float32", data=b"\0" * 12)), "bytes"),
            "missing": (pb2.ScaleRequest(), "missing"),
        }
        for case, (request, fragment) in bad.items():
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
            assert fragment in info.value.details(), (case, info.value.details())


def test_concurrent_clients_are_batched_with_tf_concat(blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    requests = 10
    recorder = BatchRecorder(expected=requests)
    model = dense(seed=2)
    calls: list[int] = []
    app = BlazeApp()

    @app.model("classify", max_batch_size=64)
    def classify(x: TFTensor[tf.float32, "batch", 8]) -> TFTensor[tf.float32, "batch", 3]:
        calls.append(int(x.shape[0]))
        recorder.gate.wait(60)  # hold the first batch until every request is queued
        return model(x, training=False)

    server = blazerpc_serve(app, plugins=[recorder])
    stubs = blazerpc_stubs(server)
    rng = np.random.default_rng(4)
    inputs = [rng.standard_normal((1 + i % 3, 8)).astype(np.float32) for i in range(requests)]
    with grpc.insecure_channel(server.address) as channel:
        call = stubs.pb2_grpc.InferenceServiceStub(channel).PredictClassify

        def one(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            return array_from_proto(call(stubs.pb2.ClassifyRequest(x=tensor_proto(stubs.pb2, x)), timeout=120).result)

        with ThreadPoolExecutor(requests) as pool:
            results = list(pool.map(one, inputs))
    for x, got in zip(inputs, results, strict=True):
        np.testing.assert_allclose(got, model(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    assert sum(calls) == sum(len(x) for x in inputs)
    assert len(calls) < requests


def test_bad_annotations_are_refused_at_registration() -> None:
    with pytest.raises(RegistrationError, match="needs a dtype"):
        TFTensor[()]
    with pytest.raises(RegistrationError, match="string"):
        TFTensor[tf.string]
    with pytest.raises(RegistrationError, match="negative"):
        TFTensor[tf.float32, -5]
