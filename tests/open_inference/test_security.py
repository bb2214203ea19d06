"""Auth applies to the protocol as to native calls, and the plugin can be disabled by name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from blazerpc_core.testing import RunningServer, serve_cli, start_server
from tests.open_inference.models import app

TOKEN = "open-inference-test-token-0123456789"
LIMITED = "open-inference-limited-token-987654"
MODELS = Path(__file__).with_name("models.py")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tokens = tmp_path_factory.mktemp("auth") / "tokens"
    tokens.write_text(f"ops {TOKEN}\nlimited {LIMITED} add\n")
    tokens.chmod(0o600)
    running = start_server(app, load_entry_points=False, model_control="explicit",
                           extra={"auth_tokens_file": str(tokens)})
    yield running
    running.stop(grace_period=5)


def _a() -> list[grpcclient.InferInput]:
    a = grpcclient.InferInput("a", [1], "FP64")
    a.set_data_from_numpy(np.array([1.0]))
    return [a]


def test_model_infer_needs_a_token(guarded):
    with grpcclient.InferenceServerClient(guarded.address) as client:
        with pytest.raises(InferenceServerException) as caught:
            client.infer("add", _a())
        assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as caught:
            client.infer("add", _a(), headers={"authorization": "Bearer wrong-token-wrong-token"})
        assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
        ok = client.infer("add", _a(), headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.as_numpy("result").tolist() == [3.0]
        assert client.infer("add", _a(), headers={"x-api-key": LIMITED}).as_numpy("result").tolist() == [3.0]
        x = grpcclient.InferInput("x", [1], "FP64")
        x.set_data_from_numpy(np.array([1.0]))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("scale", [x], headers={"x-api-key": LIMITED})
        assert caught.value.status() == "StatusCode.PERMISSION_DENIED"


def test_repository_rpcs_need_a_token_when_auth_is_on(guarded):
    with grpcclient.InferenceServerClient(guarded.address) as client:
        for call in (lambda **h: client.get_model_repository_index(**h),
                     lambda **h: client.unload_model("nope", **h)):
            with pytest.raises(InferenceServerException) as caught:
                call()
            assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
        index = client.get_model_repository_index(headers={"authorization": f"Bearer {TOKEN}"}, as_json=True)
        assert any(row["name"] == "add" for row in index["models"])
        assert client.is_server_ready()  # health and metadata stay open, as health and reflection do


def _unimplemented(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerLive(service_pb2.ServerLiveRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "inference.GRPCInferenceService" not in ProtoReflectionDescriptorDatabase(channel).get_services()


def test_disabling_the_plugin_removes_the_service():
    running = start_server(app, load_entry_points=False, disabled=["open-inference"])
    try:
        _unimplemented(running.address)
    finally:
        running.stop(grace_period=5)


def test_disable_plugin_on_the_command_line():
    with serve_cli(f"{MODELS}:app", "--disable-plugin", "open-inference") as server:
        _unimplemented(server.address)
    with serve_cli(f"{MODELS}:app") as server, grpcclient.InferenceServerClient(server.address) as client:
        assert client.is_server_ready()
        assert client.infer("add", _a()).as_numpy("result").tolist() == [3.0]
