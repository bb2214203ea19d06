"""An .onnx file loaded into a running server through blazerpc.ManagementService, then reloaded and unloaded."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from onnx_models import build_mlp, mlp_reference

from blazerpc_core import BlazeApp
from blazerpc_core.client import CallError, Client
from blazerpc_core.testing import management_stubs, start_server


def _base() -> BlazeApp:
    app = BlazeApp()

    @app.model("base")
    def base(x: float) -> float:
        return x + 1

    return app


def test_an_onnx_file_from_the_repository_becomes_a_callable_rpc_and_reloads_with_new_weights(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    repository.mkdir()
    mgmt = management_stubs(tmp_path / "stubs")
    server = start_server(_base(), model_control="explicit", model_repository=str(repository))
    x = np.random.default_rng(3).standard_normal((3, 512)).astype(np.float32)
    try:
        build_mlp(repository / "mlp.onnx", seed=0)
        with grpc.insecure_channel(server.address) as channel:
            stub = mgmt.pb2_grpc.ManagementServiceStub(channel)
            loaded = stub.LoadModel(mgmt.pb2.LoadModelRequest(source="mlp.onnx"), timeout=60)
            assert [(m.name, m.state, list(m.rpcs)) for m in loaded.models] == [("mlp", "READY", ["PredictMlp"])]
            with Client(server.address, timeout=30) as client:  # learns the new rpc through reflection
                np.testing.assert_allclose(client.call("mlp", x=x), mlp_reference(x, seed=0), rtol=1e-4, atol=1e-5)
            build_mlp(repository / "mlp.onnx", seed=1)  # new weights, same signature
            stub.ReloadModel(mgmt.pb2.ModelRef(name="mlp"), timeout=60)
            with Client(server.address, timeout=30) as client:
                np.testing.assert_allclose(client.call("mlp", x=x), mlp_reference(x, seed=1), rtol=1e-4, atol=1e-5)
                stub.UnloadModel(mgmt.pb2.ModelRef(name="mlp"), timeout=60)
                with pytest.raises(CallError) as gone:
                    client.call("mlp", x=x)
                assert gone.value.status.name in ("NOT_FOUND", "UNIMPLEMENTED") and "mlp" in gone.value.message
                assert client.call("base", x=1.0) == 2.0
    finally:
        server.stop()
