"""The core never imports an ML framework, and works where none can be imported.

Each check runs in a fresh interpreter, because this test process may already hold
frameworks that other tests imported. Installed framework plugins (blazerpc-torch, -tf,
-onnx) are loaded as usual, so the checks cover them too: loading a plugin must not
import its framework.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

FRAMEWORKS = ("torch", "tensorflow", "onnxruntime", "onnx", "keras", "jax")

APP = '''
from blazerpc_core import BlazeApp, TensorInput, TensorOutput
import numpy as np

app = BlazeApp()

@app.model("add")
def add(a: float, b: float) -> float:
    return a + b

@app.model("double", max_batch_size=8)
def double(x: TensorInput[np.float32, "batch", 2]) -> TensorOutput[np.float32, "batch", 2]:
    return x * 2
'''

SERVE_AND_CALL = '''
import json, sys
import grpc
import numpy as np
from blazerpc_core.cli import make_cli
from blazerpc_core.defaults.targets import load_python_target
from blazerpc_core.testing import compile_stubs, start_server

app_path = sys.argv[1]
for args in (["plugins"], ["models", app_path], ["serve", "--help"]):
    make_cli()(args, standalone_mode=False)
server = start_server(load_python_target(app_path))
try:
    stubs = compile_stubs(server.proto_text)
    with grpc.insecure_channel(server.address) as channel:
        stub = stubs.pb2_grpc.InferenceServiceStub(channel)
        assert stub.PredictAdd(stubs.pb2.AddRequest(a=1, b=2), timeout=30).result == 3
        x = np.ones((1, 2), np.float32)
        tensor = stubs.pb2.TensorProto(shape=[1, 2], dtype="float32", data=x.tobytes())
        reply = stub.PredictDouble(stubs.pb2.DoubleRequest(x=tensor), timeout=30)
        assert np.frombuffer(reply.result.data, np.float32).tolist() == [2.0, 2.0]
finally:
    server.stop()
print(json.dumps(sorted(name for name in FRAMEWORKS if name in sys.modules)))
'''

BLOCK_FRAMEWORKS = '''
import sys

class NoFrameworks:
    """Makes every framework import fail, as on a machine where none is installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FRAMEWORKS:
            raise ImportError(f"{name} is not installed here")
        return None

sys.meta_path.insert(0, NoFrameworks())
'''


def _run(tmp_path: Path, *, block: bool) -> list[str]:
    app = tmp_path / "app.py"
    app.write_text(APP)
    script = f"FRAMEWORKS = {FRAMEWORKS!r}\n" + (BLOCK_FRAMEWORKS if block else "") + SERVE_AND_CALL
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(app)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    imported: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return imported


def test_serving_an_app_imports_no_framework(tmp_path: Path) -> None:
    assert _run(tmp_path, block=False) == []


def test_everything_works_where_no_framework_can_be_imported(tmp_path: Path) -> None:
    assert _run(tmp_path, block=True) == []


def test_importing_the_core_imports_no_framework() -> None:
    code = f"import sys, blazerpc_core; print([m for m in {FRAMEWORKS!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
