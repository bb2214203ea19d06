"""``blazerpc serve model.onnx`` as a real subprocess, with its options and env vars."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
from onnx_models import build_mlp, build_string_input, mlp_reference

from blazerpc_core.testing import array_from_proto, cli_stubs, run_cli, serve_cli, tensor_proto


def test_serve_onnx_file(tmp_path: Path) -> None:
    model = str(build_mlp(tmp_path / "mlp.onnx"))
    stubs = cli_stubs([model], tmp_path)
    x = np.random.default_rng(2).standard_normal((4, 512)).astype(np.float32)
    with serve_cli(model) as server, grpc.insecure_channel(server.address) as channel:
        reply = stubs.pb2_grpc.InferenceServiceStub(channel).PredictMlp(
            stubs.pb2.MlpRequest(x=tensor_proto(stubs.pb2, x)), timeout=30
        )
        np.testing.assert_allclose(array_from_proto(reply.result), mlp_reference(x), rtol=1e-4, atol=1e-5)
        code = server.stop()
    assert code == 0, server.output()
    assert "PredictMlp" in server.output()


def test_name_providers_and_threads_from_env_and_flags(tmp_path: Path) -> None:
    model = str(build_mlp(tmp_path / "mlp.onnx"))
    env = {"BLAZERPC_ONNX_PROVIDERS": "cpu", "BLAZERPC_ONNX_INTRA_OP_THREADS": "1", "BLAZERPC_NAME": "classifier"}
    stubs = cli_stubs([model], tmp_path, env=env)
    assert hasattr(stubs.pb2, "ClassifierRequest")
    x = np.ones((1, 512), dtype=np.float32)
    with serve_cli(model, "--onnx-inter-op-threads", "1", env=env) as server, \
            grpc.insecure_channel(server.address) as channel:
        reply = stubs.pb2_grpc.InferenceServiceStub(channel).PredictClassifier(
            stubs.pb2.ClassifierRequest(x=tensor_proto(stubs.pb2, x)), timeout=30
        )
    np.testing.assert_allclose(array_from_proto(reply.result), mlp_reference(x), rtol=1e-4, atol=1e-5)


def test_options_are_listed_in_help() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--onnx-providers", "--onnx-intra-op-threads", "--onnx-inter-op-threads", "--name",
                   "BLAZERPC_ONNX_PROVIDERS", "BLAZERPC_NAME"):
        assert option in result.stdout
    plugins = run_cli("plugins")
    assert "blazerpc_onnx.plugin" in plugins.stdout


def test_bad_targets_fail_with_a_message(tmp_path: Path) -> None:
    model = str(build_mlp(tmp_path / "mlp.onnx"))
    unknown = run_cli("serve", model, "--onnx-providers", "warp-drive", "--port", "0")
    assert unknown.returncode != 0 and "'warp-drive' is not available" in unknown.stderr
    strings = run_cli("serve", str(build_string_input(tmp_path / "strings.onnx")), "--port", "0")
    assert strings.returncode != 0 and "tensor(string)" in strings.stderr
    missing = run_cli("serve", str(tmp_path / "nope.onnx"), "--port", "0")
    assert missing.returncode != 0 and "no such file" in missing.stderr
    negative = run_cli("serve", model, "--onnx-intra-op-threads", "-1", "--port", "0")
    assert negative.returncode != 0 and "--onnx-intra-op-threads" in negative.stderr


def test_proto_and_models_take_the_options_serve_takes(tmp_path: Path) -> None:
    model = str(build_mlp(tmp_path / "mlp.onnx"))
    listed = run_cli("models", model, "--name", "classifier", "--onnx-providers", "cpu")
    assert listed.returncode == 0, listed.stderr
    assert "classifier" in listed.stdout and "PredictClassifier" in listed.stdout
    written = run_cli("proto", model, "--name", "scorer", "--onnx-intra-op-threads", "1", "-o", str(tmp_path / "p"))
    assert written.returncode == 0, written.stderr
    assert "rpc PredictScorer" in (tmp_path / "p" / "blaze_service.proto").read_text()
