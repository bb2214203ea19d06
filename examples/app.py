"""The quick-start app: a text model, a scalar model and a tensor model.

Serve it with ``blazerpc serve examples/app.py``.
"""

import numpy as np

from blazerpc_core import BlazeApp, TensorInput, TensorOutput

app = BlazeApp()


@app.model("sentiment")
def sentiment(text: list[str]) -> list[float]:
    """A toy sentiment score per text."""
    return [0.9 if "good" in t else 0.1 for t in text]


@app.model("add")
def add(a: float, b: float) -> float:
    return a + b


@app.model("classify")
def classify(x: TensorInput[np.float32, "batch", 512]) -> TensorOutput[np.float32, "batch", 10]:
    """Ten scores per row; rows from concurrent requests are batched together."""
    return x[:, :10] * 2
