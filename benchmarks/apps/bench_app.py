"""The app the unary and batching benchmarks serve: the bench contract's add, classify and slow.

    blazerpc serve benchmarks/apps/bench_app.py --port 50051
"""

from __future__ import annotations

import time

import numpy as np

from blazerpc_core import BlazeApp, TensorInput, TensorOutput

app = BlazeApp()


@app.model("add")
def add(a: float, b: float) -> float:
    return a + b


@app.model("classify")
def classify(x: TensorInput[np.float32, None, 512]) -> TensorOutput[np.float32, None, 10]:
    return x[:, :10] * 2


@app.model("slow")
def slow(x: TensorInput[np.float32, "batch", 16]) -> TensorOutput[np.float32, "batch", 16]:
    """Imitates an accelerator: 2 ms per call plus 0.02 ms per row, with the GIL released."""
    time.sleep(0.002 + 0.00002 * len(x))
    return x
