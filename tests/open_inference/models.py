"""Models the Open Inference Protocol tests serve, one per concern, and the test plugins they need.

Served by ``blazerpc serve tests/open_inference/models.py`` too (the CLI tests), so nothing here
runs at import but definitions.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from blazerpc_core import BlazeApp, TensorInput, TensorOutput, hookimpl
from blazerpc_core.schema.fields import FieldMapping, TypeContext
from blazerpc_core.schema.tensors import TensorSpec, checked_payload, tensor_mapping
from blazerpc_core.testing import BatchRecorder

app = BlazeApp()


@app.model("add")
def add(a: float, b: float = 2.0) -> float:
    """Scalars, one optional."""
    return a + b


@app.model("count")
def count(n: int, flag: bool, note: str | None = None) -> int:
    """INT64, BOOL and an optional BYTES scalar."""
    return n * 2 + int(flag) + (len(note) if note is not None else 0)


@app.model("echo")
def echo(texts: list[str], blobs: list[bytes]) -> list[bytes]:
    """Text and bytes lists: the blobs come back reversed, each text upper-cased."""
    return [b[::-1] for b in blobs] + [t.upper().encode() for t in texts]


@app.model("half")
def half(x: TensorInput[np.float16, None, 3]) -> TensorOutput[np.float16, None, 3]:
    """FP16 tensors, not batched."""
    return x * 2


@dataclass
class Stats:
    total: float
    count: int
    label: str


@app.model("summary")
def summary(values: list[float]) -> Stats:
    """A dataclass output: one output per field."""
    return Stats(total=float(sum(values)), count=len(values), label=f"n={len(values)}")


@app.model("scale", version="1")
def scale_v1(x: float) -> float:
    return x * 10


@app.model("scale", version="2")
def scale_v2(x: float) -> float:
    return x * 100


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@app.model("mapped")
def mapped(counts: dict[str, int], color: Color) -> int:
    """No tensor form: a map parameter."""
    return sum(counts.values())


@app.model("tokens")
def tokens(prompt: str, n: int) -> Iterator[str]:
    """Server streaming: decoupled in the protocol."""
    for index in range(n):
        yield f"{prompt}-{index}"


@app.model("drip")
def drip(n: int) -> Iterator[int]:
    """A slow stream: one item every 0.15 s."""
    for index in range(n):
        time.sleep(0.15)
        yield index


@app.model("total")
def total(values: Iterator[float]) -> float:
    """Client streaming: no tensor form."""
    return sum(values)


@app.model("sleepy")
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.model("fails")
def fails(x: float) -> float:
    raise ValueError("the model does not like this input")


# -- batched models (controlled by a gate the tests open) -----------------------------------


class Gate:
    """Holds a model's first call until a test lets it go, so the requests behind it queue up."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[Any] = []

    def reset(self) -> None:
        self.entered.clear()
        self.release.clear()
        self.calls.clear()

    def hold(self, value: Any) -> None:
        self.calls.append(value)
        self.entered.set()
        if not self.release.wait(20):
            raise TimeoutError("the test never opened the gate")


#: Records the batches of the package's shared server (tests wait for queue depths on it).
RECORDER = BatchRecorder()
MATMUL_GATE = Gate()
PRIORITY_GATE = Gate()
STATS_GATE = Gate()
WEIGHTS = np.arange(4 * 3, dtype=np.float32).reshape(4, 3) / 10


@app.model("matmul", max_batch_size=32, batch_timeout_ms=20)
def matmul(x: TensorInput[np.float32, "batch", 4]) -> TensorOutput[np.float32, "batch", 3]:
    """A batched FP32 model: ``x @ W``; counts its calls (rows per call) in MATMUL_GATE."""
    MATMUL_GATE.calls.append(len(x))
    if len(MATMUL_GATE.calls) == 1:
        MATMUL_GATE.entered.set()
        MATMUL_GATE.release.wait(20)
    return x @ WEIGHTS


@app.model("ordered", max_batch_size=1)
def ordered(tag: list[str]) -> list[str]:
    """One row per call, so the order of calls is the queue's priority order."""
    if not PRIORITY_GATE.calls:
        PRIORITY_GATE.hold(tag[0])
    else:
        PRIORITY_GATE.calls.append(tag[0])
    return tag


@app.model("counted", max_batch_size=16, batch_timeout_ms=50)
def counted(x: list[float]) -> list[float]:
    """Batched, for statistics: the first call waits for the gate."""
    if not STATS_GATE.calls:
        STATS_GATE.hold(len(x))
    else:
        STATS_GATE.calls.append(len(x))
    return [v + 1 for v in x]


@app.model("unbatched-stats")
def unbatched_stats(x: float) -> float:
    return -x


# -- BF16: a tensor type a plugin adds (as the torch and TF plugins do) ---------------------


class Bf16:
    """Annotation of a bfloat16 tensor of any shape: the model gets the raw 16-bit patterns as uint16."""


def _bf16_decode(message: Any) -> np.ndarray[Any, Any]:
    shape, data = checked_payload(message, TensorSpec(None, None), "bfloat16", 2)
    return np.frombuffer(data, dtype="<u2").reshape(shape)


def _bf16_encode(bits: Any) -> dict[str, Any]:
    array = np.ascontiguousarray(bits, dtype="<u2")
    return {"shape": array.shape, "dtype": "bfloat16", "data": array.tobytes()}


class Bf16Plugin:
    __name__ = "bf16-test"

    @hookimpl
    def blazerpc_map_type(self, annotation: Any, context: TypeContext) -> FieldMapping | None:
        if annotation is Bf16:
            return tensor_mapping(context, TensorSpec(None, None), decode=_bf16_decode, encode=_bf16_encode,
                                  batch=None)
        return None


bf16_app = BlazeApp(plugins=[Bf16Plugin()])


@bf16_app.model("bf16-double")
def bf16_double(x: Bf16) -> Bf16:
    """Doubles bfloat16 values by working on their bit patterns through float32."""
    as_float = (x.astype(np.uint32) << 16).view(np.float32) * 2
    return (as_float.view(np.uint32) >> 16).astype(np.uint16)
