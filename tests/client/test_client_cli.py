"""``blazerpc call`` and ``blazerpc health`` as subprocesses, against ``blazerpc serve`` and in-process servers."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blazerpc_core.testing import ServeProcess, free_port, run_cli, serve_cli
from tests.client.client_apps import WarmingServer, streaming_app

REPO = Path(__file__).resolve().parents[2]
TOKEN = "cli-test-token-0123456789"


@pytest.fixture(scope="module")
def served(tmp_path_factory: Any) -> Iterator[ServeProcess]:
    directory: Path = tmp_path_factory.mktemp("cli-apps")
    apps = (("varied.py", "tests.apps:varied_app"), ("streams.py", "tests.client.client_apps:streaming_app"))
    for name, factory in apps:
        module, function = factory.split(":")
        (directory / name).write_text(textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(REPO)!r})
            from {module} import {function}
            app = {function}()
        """))
    with serve_cli(str(directory / "varied.py"), str(directory / "streams.py")) as server:
        yield server


def call(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    done = run_cli("call", *args, env=env, timeout=60)
    return done.returncode, done.stdout, done.stderr


def test_call_prints_the_result_as_json(served: ServeProcess) -> None:
    code, out, err = call(served.address, "add", "a=0.1", "b=0.2")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"result": 0.30000000000000004}
    # Bare words are strings; a string or bytes input takes any text as is.
    code, out, _ = call(served.address, "echo-scalars", "s=42", "i=3", "flag=true", "raw=hi")
    assert json.loads(out) == {"result": "42|3|True|6869"}
    # Enums by member name, nested messages as JSON objects, several outputs as keys.
    assert json.loads(call(served.address, "next-color", "color=GREEN")[1]) == {"result": "BLUE"}
    code, out, _ = call(served.address, "area", 'box={"x": 1, "y": 2, "label": "a"}', "boxes=[]")
    assert json.loads(out) == {"total": 2.0, "count": 1, "labels": ["a"]}
    assert json.loads(call(served.address, "version-me", "x=1", "--version", "1")[1]) == {"result": 2}
    assert json.loads(call(served.address, "blob", "size=3")[1]) == {"result": {"base64": "eHh4"}}


def test_call_streams_and_lists_models(served: ServeProcess) -> None:
    code, out, _ = call(served.address, "generate", "prompt=hi", "n=2")
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [{"result": "hi-0"}, {"result": "hi-1"}]
    assert json.loads(call(served.address, "total", "values=[1, 2.5]")[1]) == {"result": 3.5}
    code, out, _ = call(served.address)
    assert code == 0
    assert "PredictAdd" in out and "client-streaming" in out and "version-me v1" in out


def test_call_tensors_from_and_to_npy_files(served: ServeProcess, tmp_path: Path) -> None:
    batch = np.arange(16, dtype=np.float32).reshape(2, 8)
    np.save(tmp_path / "batch.npy", batch)
    code, out, err = call(served.address, "flip", f"x=@{tmp_path / 'batch.npy'}")
    assert code == 0, err
    assert json.loads(out) == {"result": {"dtype": "float32", "shape": [2, 8], "data": batch[::-1].tolist()}}
    code, out, err = call(served.address, "classify", f"x=@{tmp_path / 'batch.npy'}", "-o", str(tmp_path / "out.npy"))
    assert code == 0, err
    assert json.loads(out)["result"] == {"dtype": "float32", "shape": [2, 2], "file": str(tmp_path / "out.npy")}
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), batch[:, :2] * 2)
    (tmp_path / "scores.json").write_text('{"a": 1, "b": 3}')
    assert json.loads(call(served.address, "weights", f"scores=@{tmp_path / 'scores.json'}")[1]) == {
        "result": {"a": 0.25, "b": 0.75}}


def test_call_errors_are_one_line_with_the_status(served: ServeProcess) -> None:
    code, out, err = call(served.address, "classify", "x=[[1, 2, 3, 4, 5, 6, 7, 8]]")  # int64, not float32
    assert code == 1 and out == ""
    assert err.startswith("Error: INVALID_ARGUMENT: ") and err.count("\n") == 1 and "float32" in err
    code, _, err = call(served.address, "explode", "x=1")
    assert code == 1 and err.startswith("Error: INTERNAL: ") and "boom 1" in err
    code, _, err = call(served.address, "add", "a=1", "c=2")
    assert code == 2 and err.startswith("Error: INVALID_ARGUMENT: ") and "a: double, b: double" in err
    code, _, err = call(served.address, "nope")
    assert code == 1 and err.startswith("Error: NOT_FOUND: ")
    code, _, err = call(f"127.0.0.1:{free_port()}", "add", "a=1", "b=2", "--timeout", "2")
    assert code == 1 and err.startswith("Error: UNAVAILABLE: ") and err.count("\n") == 1


def test_health_exit_codes(served: ServeProcess) -> None:
    for args, code, out in (
        ((), 0, "SERVING\n"),
        (("--service", "blazerpc.InferenceService"), 0, "SERVING\n"),
        (("--service", "no.such.Service"), 2, ""),
        (("--watch", "--timeout", "0.5"), 0, "SERVING\n"),
    ):
        done = run_cli("health", served.address, *args, timeout=60)
        assert (done.returncode, done.stdout) == (code, out), done.stderr
    done = run_cli("health", f"127.0.0.1:{free_port()}", "--timeout", "2", timeout=60)
    assert done.returncode == 3 and done.stderr.startswith("Error: UNAVAILABLE: ")


def test_health_of_a_warming_server_is_one() -> None:
    warming = WarmingServer(streaming_app())
    try:
        done = run_cli("health", warming.address, timeout=60)
        assert (done.returncode, done.stdout) == (1, "NOT_SERVING\n")
    finally:
        warming.stop()


def test_credentials_from_options_and_the_environment(blazerpc_serve: Any, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"tester {TOKEN}\n")
    os.chmod(tokens, 0o600)
    server = blazerpc_serve(streaming_app(), extra={"auth_tokens_file": str(tokens)})
    code, _, err = call(server.address, "whoami", "x=1")
    assert code == 1 and err.startswith("Error: UNAUTHENTICATED: ")
    assert call(server.address, "whoami", "x=1", env={"BLAZERPC_TOKEN": TOKEN})[:2] == (0, '{"result": "server"}\n')
    assert call(server.address, "whoami", "x=1", "--api-key", TOKEN)[0] == 0
