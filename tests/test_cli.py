"""The ``blazerpc`` command line, run as a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blazerpc_core import ModelSpec, ServeSettings, cli, hookimpl, model
from blazerpc_core.plugins import make_plugin_manager
from blazerpc_core.spec import as_spec
from blazerpc_core.testing import array_from_proto, compile_stubs, free_port, run_cli, serve_cli, tensor_proto

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "examples" / "app.py")
EXAMPLE_PACKAGE = ROOT / "examples" / "blazerpc-example-models"


def test_proto_output_compiles_and_a_grpcio_client_calls_every_model(tmp_path):
    result = run_cli("proto", APP, "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    stubs = compile_stubs((tmp_path / "out" / "blaze_service.proto").read_text(), tmp_path / "gen")
    pb2 = stubs.pb2
    with serve_cli(APP) as server, grpc.insecure_channel(server.address) as channel:
        stub = stubs.pb2_grpc.InferenceServiceStub(channel)
        assert stub.PredictAdd(pb2.AddRequest(a=0.1, b=0.2), timeout=10).result == 0.1 + 0.2
        assert list(stub.PredictSentiment(pb2.SentimentRequest(text=["good", "meh"]), timeout=10).result) == [0.9, 0.1]
        x = np.random.default_rng(1).standard_normal((3, 512)).astype(np.float32)
        out = array_from_proto(stub.PredictClassify(pb2.ClassifyRequest(x=tensor_proto(pb2, x)), timeout=10).result)
        np.testing.assert_array_equal(out, x[:, :10] * 2)
        banner = server.output()
    assert f"on 127.0.0.1:{server.port}" in banner
    for line in ("add v1  [unary]  rpc PredictAdd", "classify v1  [unary]  rpc PredictClassify",
                 "sentiment v1  [unary]  rpc PredictSentiment"):
        assert line in banner


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_flips_health_drains_finishes_inflight_and_exits_zero(tmp_path, sig):
    import signal

    app = tmp_path / "slow.py"
    app.write_text(
        "import time\nfrom blazerpc_core import BlazeApp\napp = BlazeApp()\n"
        "@app.model('slow')\ndef slow(seconds: float) -> float:\n    time.sleep(seconds)\n    return seconds\n"
    )
    with serve_cli(str(app), "--grace-period", "20") as server:
        assert run_cli("proto", str(app), "-o", str(tmp_path / "p")).returncode == 0
        stubs = compile_stubs((tmp_path / "p" / "blaze_service.proto").read_text(), tmp_path / "gen")
        channel = grpc.insecure_channel(server.address)
        stub = stubs.pb2_grpc.InferenceServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        inflight = [stub.PredictSlow.future(stubs.pb2.SlowRequest(seconds=1.5), timeout=30) for _ in range(4)]
        stub.PredictSlow(stubs.pb2.SlowRequest(seconds=0), timeout=10)  # the four are in flight now
        server.process.send_signal(getattr(signal, sig))
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        # Until its final GOAWAY a draining server still takes calls (proxies may not have noticed
        # yet); after it, a new call is refused UNAVAILABLE. Either way none is lost silently.
        try:
            assert stub.PredictSlow(stubs.pb2.SlowRequest(seconds=0), timeout=10).result == 0
        except grpc.RpcError as refused:
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert [f.result().result for f in inflight] == [1.5] * 4
        assert server.process.wait(30) == 0
        channel.close()


def test_bare_serve_serves_installed_model_packages(tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
         str(site), str(EXAMPLE_PACKAGE)],
        check=True, capture_output=True,
    )
    env = {"PYTHONPATH": str(site)}
    listed = run_cli("models", env=env).stdout
    assert "text-sentiment" in listed and "blazerpc-example-models:examples" in listed
    assert run_cli("proto", "-o", str(tmp_path / "p"), env=env).returncode == 0
    stubs = compile_stubs((tmp_path / "p" / "blaze_service.proto").read_text(), tmp_path / "gen")
    pb2 = stubs.pb2
    with serve_cli(env=env) as server, grpc.insecure_channel(server.address) as channel:
        stub = stubs.pb2_grpc.InferenceServiceStub(channel)
        scores = stub.PredictTextSentiment(pb2.TextSentimentRequest(texts=["good great", "bad", "hm"]), timeout=10)
        assert list(scores.result) == [1.0, 0.0, 0.5]
        assert stub.PredictScale(pb2.ScaleRequest(x=2), timeout=10).result == 6.0
        assert stub.PredictScale(pb2.ScaleRequest(x=2, factor=10), timeout=10).result == 20.0
        assert stub.PredictScaleV1(pb2.ScaleV1Request(x=2), timeout=10).result == 4.0
        out = stub.PredictEmbed(pb2.EmbedRequest(x=tensor_proto(pb2, np.ones((2, 16), np.float32))), timeout=10)
        assert list(out.result.shape) == [2, 4]
        assert "scale v2" in server.output()
        # The class model loaded its weights file after the server bound its port, and warmed up.
        rows = np.arange(32, dtype=np.float32).reshape(2, 16)
        scores = stub.PredictClassifier(pb2.ClassifierRequest(x=tensor_proto(pb2, rows)), timeout=10)
        weights = np.load(site / "blazerpc_example_models" / "weights.npy")
        np.testing.assert_allclose(array_from_proto(scores.result), rows @ weights, rtol=1e-6)
        assert "model 'classifier' version '1' ready (load " in server.output()


def test_options_read_blazerpc_environment_variables(tmp_path):
    port = free_port()
    env = {"BLAZERPC_PORT": str(port), "BLAZERPC_HOST": "127.0.0.1"}
    with serve_cli(APP, env=env, port=port) as server:
        assert f"127.0.0.1:{port}" in server.output()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)


def test_help_is_complete():
    top = run_cli("--help").stdout
    for command in ("serve", "proto", "models", "plugins"):
        assert command in top
    serve = run_cli("serve", "--help").stdout
    for option in ("--host", "--port", "--workers", "--grace-period", "--max-batch-size", "--batch-timeout-ms",
                   "--metrics-port", "--tls-cert", "--tls-key", "--tls-client-ca", "--max-message-mb",
                   "--disable-plugin", "BLAZERPC_PORT", "TARGET"):
        assert option in serve, option
    assert "--output-dir" in run_cli("proto", "--help").stdout


def test_models_lists_name_version_shape_and_rpc():
    out = run_cli("models", APP).stdout
    assert "add" in out and "PredictAdd" in out and "unary" in out


@pytest.mark.parametrize(
    ("target", "message"),
    [("no_such_module_xyz", "cannot import"), ("missing.py", "no such file"), (f"{APP}:nothing", "no attribute")],
)
def test_bad_targets_fail_with_a_clear_message(target, message):
    result = run_cli("proto", target, "-o", "/tmp/unused-blazerpc-proto")
    assert result.returncode != 0 and message in result.stderr


class NamedTargets:
    """A plugin that loads TARGET ``fake`` as one model named by ``--name``, and adds an option."""

    def __init__(self) -> None:
        self.settings: list[ServeSettings] = []

    @hookimpl
    def blazerpc_cli_options(self) -> list[click.Option]:
        return [
            click.Option(["--fake-scale"], envvar="BLAZERPC_FAKE_SCALE", default=None),
            click.Option(["--fake-scale", "again"], default=None),  # declared twice: the first one is used
            click.Option(["--name"], default=None),  # the core's option: skipped
        ]

    @hookimpl
    def blazerpc_load_target(self, target: str, settings: ServeSettings) -> list[ModelSpec] | None:
        if target != "fake":
            return None
        self.settings.append(settings)

        def predict(x: float) -> float:
            return x

        return [as_spec(model(settings.model_name or "fake")(predict))]


def test_proto_and_models_take_name_and_plugin_options_as_serve_does(monkeypatch, tmp_path):
    plugin = NamedTargets()
    monkeypatch.setattr(cli, "make_plugin_manager", lambda **kw: make_plugin_manager(plugins=[plugin], **kw))
    group = cli.make_cli()
    for command in ("serve", "proto", "models"):
        flags = [param.opts for param in group.commands[command].params]
        assert flags.count(["--name"]) == 1 and flags.count(["--fake-scale"]) == 1, command
        assert "--name" in CliRunner().invoke(group, [command, "--help"]).output
    listed = CliRunner().invoke(group, ["models", "fake", "--name", "scorer", "--fake-scale", "2"])
    assert listed.exit_code == 0, listed.output
    assert "PredictScorer" in listed.output
    env = {"BLAZERPC_NAME": "ranker", "BLAZERPC_FAKE_SCALE": "3"}
    written = CliRunner().invoke(group, ["proto", "fake", "-o", str(tmp_path)], env=env)
    assert written.exit_code == 0, written.output
    assert "rpc PredictRanker" in (tmp_path / "blaze_service.proto").read_text()
    assert [(s.model_name, s.extra["fake_scale"]) for s in plugin.settings] == [("scorer", "2"), ("ranker", "3")]
    assert all("name" not in s.extra and "again" not in s.extra for s in plugin.settings)
