"""PyTriton serving the suite's models: ``classify`` (``x @ W``) and ``slow`` (the accelerator-like one).

Runs in PyTriton's own virtualenv (``nox -s bench-peers`` makes it); Triton's C++ gRPC front
end and dynamic batcher (at most 32 rows, 2 ms queue delay) in front of one Python model
instance each, as PyTriton deploys a model by default. The bundled Triton's Python backend
stub links ``libpython3.11.so.1.0`` and would load the system's copy, not this
interpreter's, so ``LD_LIBRARY_PATH`` gets this interpreter's lib directory first.

    .nox/peer-pytriton/bin/python benchmarks/peers/pytriton_server.py --port 8001
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: benchmarks.model

from benchmarks import model
from benchmarks.peers import free_port

MAX_BATCH = 32
QUEUE_DELAY_US = 2000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="gRPC port")
    args = parser.parse_args()
    libdir = sysconfig.get_config_var("LIBDIR")
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)

    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    @batch
    def classify(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"result": model.matmul(x)}

    @batch
    def slow(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"result": model.accelerator(x)}

    config = TritonConfig(grpc_address="127.0.0.1", grpc_port=args.port, http_address="127.0.0.1",
                          http_port=free_port(), metrics_port=free_port(), allow_gpu_metrics=False, log_verbose=0)
    batcher = DynamicBatcher(max_queue_delay_microseconds=QUEUE_DELAY_US)
    batching = ModelConfig(max_batch_size=MAX_BATCH, batcher=batcher)
    with Triton(config=config) as triton:
        for name, func in (("classify", classify), ("slow", slow)):
            triton.bind(
                model_name=name, infer_func=func,
                inputs=[Tensor(name="x", dtype=np.float32, shape=(model.COLS,))],
                outputs=[Tensor(name="result", dtype=np.float32, shape=(model.OUTPUTS,))],
                config=batching,
            )
        print(f"READY 127.0.0.1:{args.port}", flush=True)
        triton.serve()


if __name__ == "__main__":
    main()
