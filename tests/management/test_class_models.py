"""Class models: loaded after the port is bound, warmed before SERVING, closed when retired; per-model health."""

from __future__ import annotations

import textwrap
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blazerpc_core import BlazeApp, RegistrationError, TensorInput, TensorOutput
from blazerpc_core.errors import StartupError
from blazerpc_core.testing import array_from_proto, start_server, tensor_proto


def _health(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status


def test_a_class_model_loads_warms_serves_and_closes(blazerpc_connect):
    events: list[str] = []
    app = BlazeApp()

    @app.model("scaler", max_batch_size=8)
    class Scaler:
        """Multiplies rows by a factor loaded in __init__."""

        def __init__(self) -> None:
            events.append("init")
            self.factor = np.float32(3.0)

        def warmup(self) -> None:
            events.append("warmup")

        def __call__(self, x: TensorInput[np.float32, "batch", 2]) -> TensorOutput[np.float32, "batch", 2]:
            return x * self.factor

        def close(self) -> None:
            events.append("close")

    assert events == []  # decorating loads nothing
    server = start_server(app)
    assert events == ["init", "warmup"]
    conn = blazerpc_connect(server)
    reply = conn.stub.PredictScaler(conn.pb2.ScalerRequest(x=tensor_proto(conn.pb2, np.ones((2, 2), np.float32))),
                                    timeout=5)
    np.testing.assert_array_equal(array_from_proto(reply.result), np.full((2, 2), 3.0, np.float32))
    assert _health(server.address, "blazerpc.model.scaler") == health_pb2.HealthCheckResponse.SERVING
    server.stop()
    assert events == ["init", "warmup", "close"]


def test_a_class_needing_init_arguments_is_refused_where_it_is_decorated():
    app = BlazeApp()
    with pytest.raises(RegistrationError, match=r"creates Needy\(\) with no arguments, but __init__ requires path"):
        @app.model("needy")
        class Needy:
            def __init__(self, path: str) -> None:
                self.path = path

            def __call__(self, x: float) -> float:
                return x


def test_while_a_model_loads_health_is_not_serving_and_calls_are_unavailable(tmp_path):
    release = tmp_path / "release"
    app_file = tmp_path / "slow_app.py"
    app_file.write_text(textwrap.dedent(f"""
        import time
        from pathlib import Path
        from blazerpc_core import BlazeApp

        app = BlazeApp()

        @app.model("slow-load")
        class SlowLoad:
            def __init__(self) -> None:
                while not Path({str(release)!r}).exists():
                    time.sleep(0.05)

            def warmup(self) -> None:
                time.sleep(0.2)

            def __call__(self, x: float) -> float:
                return x + 1
    """))
    import subprocess
    import sys

    from blazerpc_core.testing import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "blazerpc_core.cli", "serve", str(app_file), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:  # the port is bound while the model is still loading
            try:
                status = _health(address)
                break
            except grpc.RpcError:
                time.sleep(0.05)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert _health(address, "blazerpc.model.slow-load") == health_pb2.HealthCheckResponse.NOT_SERVING
        with grpc.insecure_channel(address) as channel:
            call = channel.unary_unary("/blazerpc.InferenceService/PredictSlowLoad")
            with pytest.raises(grpc.RpcError) as refused:
                call(b"\t\x00\x00\x00\x00\x00\x00\xf0?", timeout=5)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        release.write_text("go")
        while _health(address) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert _health(address, "blazerpc.model.slow-load") == health_pb2.HealthCheckResponse.SERVING
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0
    line = next(line for line in output.splitlines() if "model 'slow-load' version '1' ready" in line)
    assert "load " in line and "warm-up 0.2" in line
    # The call refused while loading went through the access log like any other call.
    assert any("PredictSlowLoad" in line and "UNAVAILABLE" in line for line in output.splitlines()), output


def test_on_load_error_fail_stops_the_start_and_skip_serves_the_rest(tmp_path):
    app = BlazeApp()

    @app.model("good")
    def good(x: float) -> float:
        return x

    @app.model("broken")
    class Broken:
        def __init__(self) -> None:
            raise OSError("weights.bin is missing")

        def __call__(self, x: float) -> float:
            return x

    with pytest.raises(StartupError, match=r"model 'broken' version '1' failed to load: OSError: weights.bin"):
        start_server(app)
    server = start_server(app, on_load_error="skip")
    try:
        with grpc.insecure_channel(server.address) as channel:
            good_call = channel.unary_unary("/blazerpc.InferenceService/PredictGood")
            assert good_call(b"\t\x00\x00\x00\x00\x00\x00\xf0?", timeout=5) == b"\t\x00\x00\x00\x00\x00\x00\xf0?"
            broken_call = channel.unary_unary("/blazerpc.InferenceService/PredictBroken")
            with pytest.raises(grpc.RpcError) as gone:
                broken_call(b"", timeout=5)
            assert gone.value.code() is grpc.StatusCode.NOT_FOUND
            assert "model 'broken' version '1' failed to load (OSError: weights.bin is missing)" in gone.value.details()
        assert _health(server.address) == health_pb2.HealthCheckResponse.SERVING
        assert _health(server.address, "blazerpc.model.broken") == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        server.stop()
