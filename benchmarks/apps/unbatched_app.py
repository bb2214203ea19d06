"""``apps/bench_app.py``'s models with batching off (``batch=False``): the unbatched configuration.

Same functions, so any difference in the numbers is the batcher's.

    blazerpc serve benchmarks/apps/unbatched_app.py --port 50051
"""

from __future__ import annotations

import numpy as np

from benchmarks import model
from blazerpc_core import BlazeApp, TensorInput, TensorOutput

app = BlazeApp()


@app.model("add")
def add(a: float, b: float) -> float:
    return a + b


@app.model("classify", batch=False)
def classify(x: TensorInput[np.float32, "batch", 512]) -> TensorOutput[np.float32, "batch", 10]:
    return model.matmul(x)


@app.model("slow", batch=False)
def slow(x: TensorInput[np.float32, "batch", 512]) -> TensorOutput[np.float32, "batch", 10]:
    """Holds the one device for 2 ms per call; concurrent calls wait for each other."""
    return model.accelerator(x)
