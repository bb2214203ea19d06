"""Example models: a text model, a tensor model and two versions of one model."""

from __future__ import annotations

import numpy as np

from blazerpc_core import BlazeApp, TensorInput, TensorOutput

app = BlazeApp()

_POSITIVE = {"good", "great", "excellent", "love", "nice"}
_NEGATIVE = {"bad", "awful", "terrible", "hate", "poor"}
_PROJECTION = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)


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
