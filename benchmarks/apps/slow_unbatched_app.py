"""``slow`` with batching off (``batch=False``): the baseline of the batching scenarios.

Same body as ``bench_app.slow``, so any difference in the numbers is the batcher's. ``add``
is here for the harness's readiness probe.

    blazerpc serve benchmarks/apps/slow_unbatched_app.py --port 50051
"""

from __future__ import annotations

import time

import numpy as np

from blazerpc_core import BlazeApp, TensorInput, TensorOutput

app = BlazeApp()


@app.model("add")
def add(a: float, b: float) -> float:
    return a + b


@app.model("slow", batch=False)
def slow(x: TensorInput[np.float32, "batch", 16]) -> TensorOutput[np.float32, "batch", 16]:
    """Imitates an accelerator: 2 ms per call plus 0.02 ms per row, with the GIL released."""
    time.sleep(0.002 + 0.00002 * len(x))
    return x
