"""SavedModel directories: ``blazerpc serve path/to/saved_model`` and ``blazerpc_tf.load_model``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import blazerpc_tf
import grpc
import numpy as np
import pytest
import tensorflow as tf
from tf_models import dense, export_keras, save_fixed, save_two_heads

from blazerpc_core import BlazeApp, RegistrationError
from blazerpc_core.testing import array_from_proto, cli_stubs, run_cli, serve_cli, tensor_proto


def _expect_invalid(call: Any, request: Any, fragment: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert fragment in info.value.details()


APP = """
import tensorflow as tf
from blazerpc_core import BlazeApp

app = BlazeApp()
tf.keras.utils.set_random_seed(3)
model = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(3)])

@app.model("classify")
def classify(x: tf.Tensor) -> tf.Tensor:   # batch dimension first
    return model(x, training=False)
"""


def test_serve_app_file_with_tf_tensors(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    stubs = cli_stubs([str(app)], tmp_path)
    tf.keras.utils.set_random_seed(3)
    model = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(3)])
    x = np.random.default_rng(6).standard_normal((2, 8)).astype(np.float32)
    # Thread options apply while the command line is parsed, before app.py builds its model.
    with serve_cli(str(app), "--tf-intra-op-threads", "1", "--tf-inter-op-threads", "1") as server:
        with grpc.insecure_channel(server.address) as channel:
            reply = stubs.pb2_grpc.InferenceServiceStub(channel).PredictClassify(
                stubs.pb2.ClassifyRequest(x=tensor_proto(stubs.pb2, x)), timeout=60
            )
        server.stop()
    np.testing.assert_allclose(array_from_proto(reply.result), model(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    assert "already running" not in server.output()


def test_serve_saved_model_directory(tmp_path: Path) -> None:
    model = dense()
    path = str(export_keras(model, tmp_path / "classifier"))
    env = {"BLAZERPC_TF_INTRA_OP_THREADS": "1"}
    stubs = cli_stubs([path], tmp_path)
    pb2 = stubs.pb2
    assert [f.name for f in pb2.ClassifierRequest.DESCRIPTOR.fields] == ["features"]
    x = np.random.default_rng(5).standard_normal((3, 8)).astype(np.float32)
    with serve_cli(path, "--tf-inter-op-threads", "1", env=env) as server, \
            grpc.insecure_channel(server.address) as channel:
        call = stubs.pb2_grpc.InferenceServiceStub(channel).PredictClassifier
        reply = call(pb2.ClassifierRequest(features=tensor_proto(pb2, x)), timeout=60)
        expected = model(x, training=False).numpy()
        np.testing.assert_allclose(array_from_proto(reply.result), expected, rtol=1e-5, atol=1e-6)
        wide = tensor_proto(pb2, x.astype(np.float64))
        _expect_invalid(call, pb2.ClassifierRequest(features=wide), "expected float32")
        _expect_invalid(call, pb2.ClassifierRequest(features=tensor_proto(pb2, x[:, :7])), "dimension 1 is 7")
        code = server.stop()
    assert code == 0, server.output()
    assert "PredictClassifier" in server.output()


def test_named_inputs_and_outputs(tmp_path: Path, blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    spec = blazerpc_tf.load_model(save_two_heads(tmp_path / "two_heads"))
    assert all(annotation.batch_named for _, annotation, _ in spec.inputs)
    app = BlazeApp()
    app.add(spec)
    app.add(blazerpc_tf.load_model(tmp_path / "two_heads", name="other", signature="other", batch=False))
    server = blazerpc_serve(app)
    stubs = blazerpc_stubs(server)
    pb2 = stubs.pb2
    # Inputs and outputs are ordered by name, so the exported .proto is the same on every load.
    assert [f.name for f in pb2.TwoHeadsRequest.DESCRIPTOR.fields] == ["ids", "values"]
    assert [f.name for f in pb2.TwoHeadsResponse.DESCRIPTOR.fields] == spec.func.output_names
    assert spec.func.output_names == ["next_id", "scaled"]
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    ids = np.array([7, 9], dtype=np.int64)
    request = pb2.TwoHeadsRequest(values=tensor_proto(pb2, values), ids=tensor_proto(pb2, ids))
    with grpc.insecure_channel(server.address) as channel:
        reply = stubs.pb2_grpc.InferenceServiceStub(channel).PredictTwoHeads(request, timeout=60)
        np.testing.assert_allclose(array_from_proto(reply.scaled), values * np.array([1, 2, 3], np.float32))
        np.testing.assert_array_equal(array_from_proto(reply.next_id), ids + 1)
        other = stubs.pb2_grpc.InferenceServiceStub(channel).PredictOther(
            pb2.OtherRequest(values=tensor_proto(pb2, values), ids=tensor_proto(pb2, ids)), timeout=60
        )
        np.testing.assert_array_equal(array_from_proto(other.next_id), ids + 1)


def test_fixed_first_dimension_is_not_batched(tmp_path: Path) -> None:
    path = save_fixed(tmp_path / "fixed")
    spec = blazerpc_tf.load_model(path)
    assert not spec.inputs[0][1].batch_named and spec.inputs[0][1].shape == (2, 3)
    with pytest.raises(RegistrationError, match="cannot be batched"):
        blazerpc_tf.load_model(path, batch=True)


def test_what_cannot_be_served_is_refused_by_name(tmp_path: Path) -> None:
    path = save_two_heads(tmp_path / "two_heads")
    with pytest.raises(RegistrationError, match=r"no signature 'missing' \(it has: .*serving_default"):
        blazerpc_tf.load_model(path, signature="missing")
    with pytest.raises(RegistrationError, match="not a SavedModel directory"):
        blazerpc_tf.load_model(tmp_path)

    class Strings(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text: Any) -> dict[str, Any]:
            return {"length": tf.strings.length(text)}

    module = Strings()
    tf.saved_model.save(module, str(tmp_path / "strings"), signatures={"serving_default": module.serve})
    with pytest.raises(RegistrationError, match=r"input 'text'.*'string'"):
        blazerpc_tf.load_model(tmp_path / "strings")
    result = run_cli("serve", str(path), "--tf-signature", "missing", "--port", "0")
    assert result.returncode != 0 and "no signature 'missing'" in result.stderr


def test_proto_and_models_take_the_options_serve_takes(tmp_path: Path) -> None:
    path = str(save_two_heads(tmp_path / "two_heads"))
    written = run_cli("proto", path, "--name", "heads", "--tf-signature", "other", "-o", str(tmp_path / "p"))
    assert written.returncode == 0, written.stderr
    assert "rpc PredictHeads" in (tmp_path / "p" / "blaze_service.proto").read_text()
    missing = run_cli("models", path, "--tf-signature", "missing")
    assert missing.returncode != 0 and "no signature 'missing'" in missing.stderr
