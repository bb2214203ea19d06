"""Example models: a text model, a tensor model, a class model with a weights file, two versions of one model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blazerpc_core import BlazeApp, TensorInput, TensorOutput

app = BlazeApp()

_POSITIVE = {"good", "great", "excellent", "love", "nice"}
_NEGATIVE = {"bad", "awful", "terrible", "hate", "poor"}
_PROJECTION = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
WEIGHTS = Path(__file__).with_name("weights.npy")


@app.model("text-sentiment")
def text_sentiment(texts: list[str]) -> list[float]:
    """Share of positive words among the opinion words of each text (0.5 when none)."""
    scores = []
    for text in texts:
        words = text.lower().split()
        pos = sum(w in _POSITIVE for w in words)
        neg = sum(w in _NEGATIVE for w in words)
        scores.append(pos / (pos + neg) if pos + neg else 0.5)
    return scores


@app.model("embed")
def embed(x: TensorInput[np.float32, "batch", 16]) -> TensorOutput[np.float32, "batch", 4]:
    """A fixed random projection of 16 features to 4; batched across concurrent requests."""
    return x @ _PROJECTION


@app.model("scale", version=1)
def scale_v1(x: float) -> float:
    return x * 2


@app.model("scale", version=2)
def scale_v2(x: float, factor: float = 3.0) -> float:
    """Version 2 takes the factor as an input; when the client leaves it out it is 3."""
    return x * factor


@app.model("classifier", max_batch_size=32)
class Classifier:
    """Three class scores per row of 16 features, from a weights file.

    The server creates it after binding its port (health says NOT_SERVING meanwhile),
    runs ``warmup`` before it is ready, and calls ``close`` when the instance is retired
    (an unload or a reload). Importing the package loads nothing.
    """

    def __init__(self) -> None:
        self.weights = np.load(WEIGHTS)

    def warmup(self) -> None:
        self(np.zeros((1, 16), np.float32))

    def __call__(self, x: TensorInput[np.float32, "batch", 16]) -> TensorOutput[np.float32, "batch", 3]:
        return x @ self.weights

    def close(self) -> None:
        del self.weights
