"""What a new user hit: one-line errors, honest logs, hung models at shutdown, reflection of methods."""

from __future__ import annotations

import json
import signal
import socket
import textwrap
import time

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from blazerpc_core.testing import free_port, run_cli, serve_cli
from tests.apps import varied_app


def _one_error_line(done) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


@pytest.fixture
def app_file(tmp_path):
    path = tmp_path / "app.py"
    path.write_text(textwrap.dedent("""
        import time
        from blazerpc_core import BlazeApp

        app = BlazeApp()

        @app.model("add")
        def add(a: float, b: float) -> float:
            return a + b

        @app.model("fail")
        def fail(x: int) -> int:
            raise ValueError("no good")

        @app.model("hang")
        def hang(x: float) -> float:
            time.sleep(3600)
            return x
    """))
    return path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--port", "99999"], "99999 is not in the range"),
        (["--log-level", "verbose"], "'verbose' is not one of"),
        (["."], "is a directory that no installed plugin serves"),
        (["no_such_module_xyz:app"], "cannot import"),
    ],
)
def test_bad_command_lines_fail_with_one_error_line(args, expected, tmp_path):
    done = run_cli("serve", *args, timeout=60)
    assert expected in _one_error_line(done)


def test_a_target_that_raises_on_import_is_one_error_line(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('weights missing')\n")
    done = run_cli("serve", str(broken), timeout=60)
    line = _one_error_line(done)
    assert "RuntimeError: weights missing" in line


def test_a_port_in_use_is_one_error_line(app_file):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("serve", str(app_file), "--port", str(port), timeout=60)
    assert f"cannot listen on 127.0.0.1:{port}" in _one_error_line(done)


def test_workers_with_a_bad_target_fail_once_before_any_worker_starts(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('weights missing')\n")
    started = time.monotonic()
    done = run_cli("serve", str(broken), "--workers", "2", "--port", str(free_port()), timeout=60)
    assert "weights missing" in _one_error_line(done)
    assert "worker 1" not in done.stderr
    assert "SIGTERM" not in done.stderr
    assert time.monotonic() - started < 30


def test_help_text_is_not_garbled():
    help_text = run_cli("serve", "--help").stdout
    assert "Serve the models named by TARGET(s)." in help_text
    assert "health answers NOT_SERVING until every model is ready, then SERVING" in " ".join(help_text.split())
    assert "        " not in help_text.split("Options:")[0], help_text


def test_json_logs_are_json_throughout_with_iso_times_and_request_ids(app_file):
    with serve_cli(str(app_file), "--log-format", "json") as server:
        with grpc.insecure_channel(server.address) as channel:
            fail = channel.unary_unary("/blazerpc.InferenceService/PredictFail")
            with pytest.raises(grpc.RpcError):
                # field 1 = 7 (varint)
                fail(b"\x08\x07", timeout=5, metadata=[("x-request-id", "req-42")])
            # A cancelled call is an ordinary event: no grpclib INFO line for it.
            hang = channel.unary_unary("/blazerpc.InferenceService/PredictHang")
            with pytest.raises(grpc.RpcError):
                hang(b"", timeout=0.2)
        time.sleep(0.5)
        assert server.stop() == 0
    lines = [line for line in server.output().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is JSON, the banner included
    assert any("blazerpc serving" in e.get("message", "") and e.get("models") for e in entries)
    assert all(e["time"].endswith("Z") and "T" in e["time"] for e in entries)
    failure = next(e for e in entries if e.get("level") == "ERROR" and e.get("model") == "fail")
    assert failure["request_id"] == "req-42"
    assert "no good" in failure["exception"]
    assert not any(e["logger"].startswith("grpclib") for e in entries), lines


def test_sigterm_exits_within_the_grace_period_while_a_model_call_hangs(app_file):
    with serve_cli(str(app_file), "--grace-period", "1") as server, grpc.insecure_channel(server.address) as channel:
        hang = channel.unary_unary("/blazerpc.InferenceService/PredictHang")
        future = hang.future(b"", timeout=60)
        time.sleep(0.5)
        started = time.monotonic()
        code = server.stop(signal.SIGTERM, timeout=30)
        took = time.monotonic() - started
        with pytest.raises(grpc.RpcError):
            future.result()
    assert code == 0
    assert took < 8, f"exit took {took:.1f}s with a 1s grace period"


def test_reflection_describes_method_symbols(blazerpc_serve):
    server = blazerpc_serve(varied_app())
    with grpc.insecure_channel(server.address) as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        found, missing = call(iter([
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="blazerpc.InferenceService.PredictAdd"),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="blazerpc.InferenceService.PredictNope"),
        ]), timeout=5)
    assert found.file_descriptor_response.file_descriptor_proto
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
