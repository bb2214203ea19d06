"""MLServer serving the suite's models: ``classify`` (``x @ W``) and ``slow`` (the accelerator-like one).

Runs in MLServer's own virtualenv (``nox -s bench-peers`` makes it): ``mlserver start`` on a
settings folder written here, models in the server process (``parallel_workers`` 0) with
adaptive batching (at most 32 rows, 5 ms). ``predict`` is a coroutine, as MLServer's
runtimes are; the model call in it blocks the loop, as a runtime that calls its framework
directly does.

    .nox/peer-mlserver/bin/python benchmarks/peers/mlserver_server.py --port 8081
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the repo root: benchmarks.model

from benchmarks.peers import free_port  # noqa: E402

MAX_BATCH = 32
BATCH_SECONDS = 0.005


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="gRPC port")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mlserver-") as tmp:
        folder = Path(tmp)
        (folder / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1", "grpc_port": args.port, "http_port": free_port(), "metrics_port": free_port(),
            "parallel_workers": 0, "debug": False, "metrics_endpoint": None,
        }))
        for name, accelerator in (("classify", False), ("slow", True)):
            (folder / name).mkdir()
            (folder / name / "model-settings.json").write_text(json.dumps({
                "name": name, "implementation": "benchmarks.peers.mlserver_runtime.Matmul",
                "max_batch_size": MAX_BATCH, "max_batch_time": BATCH_SECONDS,
                "parameters": {"extra": {"accelerator": accelerator}},
            }))
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        os.chdir(folder)
        from mlserver.cli.main import main as mlserver_main

        sys.argv = ["mlserver", "start", str(folder)]
        mlserver_main()


if __name__ == "__main__":
    main()
