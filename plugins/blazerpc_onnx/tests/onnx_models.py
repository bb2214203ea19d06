"""Tiny ONNX graphs built with ``onnx.helper`` at test time (also used by the benchmarks).

``build_mlp(path)`` writes the benchmark model: float32 ``x[batch, 512]`` → Gemm 512→256
→ Relu → Gemm 256→10 → ``logits[batch, 10]``, with fixed random weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: Opset 17 with IR version 8 loads in every onnxruntime from 1.13 on.
OPSET = 17
IR_VERSION = 8


def _save(graph: Any, path: str | Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="blazerpc-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def mlp_weights(seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    return {
        "w1": (rng.standard_normal((256, 512)) / np.sqrt(512)).astype(np.float32),
        "b1": (rng.standard_normal(256) * 0.1).astype(np.float32),
        "w2": (rng.standard_normal((10, 256)) / np.sqrt(256)).astype(np.float32),
        "b2": (rng.standard_normal(10) * 0.1).astype(np.float32),
    }


def mlp_reference(x: np.ndarray[Any, Any], seed: int = 0) -> np.ndarray[Any, Any]:
    """What :func:`build_mlp`'s graph computes, in numpy."""
    w = mlp_weights(seed)
    hidden = np.maximum(x @ w["w1"].T + w["b1"], 0)
    return hidden @ w["w2"].T + w["b2"]


def build_mlp(path: str | Path, *, seed: int = 0) -> Path:
    """An MLP 512→256→10 (float32, dynamic ``batch`` first dimension) saved at ``path``."""
    from onnx import TensorProto, helper, numpy_helper

    w = mlp_weights(seed)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["hidden"], transB=1),
            helper.make_node("Relu", ["hidden"], ["hidden_relu"]),
            helper.make_node("Gemm", ["hidden_relu", "w2", "b2"], ["logits"], transB=1),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 512])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(array, name) for name, array in w.items()],
    )
    return _save(graph, path)


def build_two_heads(path: str | Path) -> Path:
    """Two inputs, two outputs: ``sum = a + b`` (float32[N, 3]) and ``count = ids * 2`` (int64[N])."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Add", ["features:0", "offset"], ["sum"]),
            helper.make_node("Mul", ["ids", "two"], ["count"]),
        ],
        "two_heads",
        [
            helper.make_tensor_value_info("features:0", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("offset", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("count", TensorProto.INT64, ["N"]),
        ],
        [numpy_helper.from_array(np.array(2, dtype=np.int64), "two")],
    )
    return _save(graph, path)


ONNX_TYPES = {
    "float32": "FLOAT", "float64": "DOUBLE", "float16": "FLOAT16", "int32": "INT32",
    "int64": "INT64", "bool": "BOOL", "int8": "INT8", "uint8": "UINT8",
}


def build_identity(path: str | Path, dtype: str, *, shape: list[Any] | None = None) -> Path:
    """``y = Identity(x)`` for one dtype; shape defaults to ``[batch, 4]``."""
    from onnx import TensorProto, helper

    elem = getattr(TensorProto, ONNX_TYPES[dtype])
    shape = shape if shape is not None else ["batch", 4]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", elem, shape)],
        [helper.make_tensor_value_info("y", elem, shape)],
    )
    return _save(graph, path)


def build_string_input(path: str | Path) -> Path:
    """A graph taking strings, which a TensorProto cannot carry."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["N"])],
    )
    return _save(graph, path)
