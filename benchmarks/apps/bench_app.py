"""The blazerpc app of the suite: the bench contract's ``add``, ``classify`` and ``slow``, batched.

``classify`` is the issue's model (``x @ W``, one (1, 512) float32 row per request) and
``slow`` the accelerator-like one (2 ms per call whatever the batch, calls cannot
overlap); both batch at most 32 rows. ``apps/unbatched_app.py`` serves the same functions
with batching off.

    blazerpc serve benchmarks/apps/bench_app.py --port 50051
"""

from __future__ import annotations

import numpy as np

from benchmarks import model
from blazerpc_core import BlazeApp, TensorInput, TensorOutput

MAX_BATCH = 32

app = BlazeApp()


@app.model("add")
def add(a: float, b: float) -> float:
    return a + b


@app.model("classify", max_batch_size=MAX_BATCH)
def classify(x: TensorInput[np.float32, "batch", 512]) -> TensorOutput[np.float32, "batch", 10]:
    return model.matmul(x)


@app.model("slow", max_batch_size=MAX_BATCH)
def slow(x: TensorInput[np.float32, "batch", 512]) -> TensorOutput[np.float32, "batch", 10]:
    """Holds the one device for 2 ms per call, whatever the batch size."""
    return model.accelerator(x)
