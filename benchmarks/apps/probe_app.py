"""Only ``add``: served next to a model file (``blazerpc serve model.onnx probe_app.py``) so the
harness's readiness probe, a real ``PredictAdd(1, 2)`` call, has something to call.

    blazerpc serve mlp.onnx benchmarks/apps/probe_app.py --name classify
"""

from __future__ import annotations

from blazerpc_core import BlazeApp

app = BlazeApp()


@app.model("add")
def add(a: float, b: float) -> float:
    return a + b
