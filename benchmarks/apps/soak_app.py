"""The app ``benchmarks/bench_overload.py`` soaks: one model of each kind a server meets in the wild.

Every path that holds memory or a file descriptor per call gets traffic: a scalar model
(inlined on the loop once it is measured cheap), a batched tensor model (queue, batch
join and split), a server-streaming generator (cancelled mid-stream too), a model that
refuses bad input or fails, and a slow model that callers abandon by deadline or cancel.

    blazerpc serve benchmarks/apps/soak_app.py --port 50051
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np

from blazerpc_core import BlazeApp, InvalidArgument, TensorInput, TensorOutput

COLS, OUT = 64, 8
MAX_TOKENS = 10_000
MAX_DELAY_MS = 1_000.0
#: An input ``checked`` treats as a model bug (a plain exception: INTERNAL by design).
BUG_INPUT = 13.0

app = BlazeApp()


def weights() -> np.ndarray:
    """The tensor model's fixed weights; the load generator computes the same to check answers."""
    return (np.arange(COLS * OUT, dtype=np.float32).reshape(COLS, OUT) % 7 - 3) / 8


_W = weights()


@app.model("add")
def add(a: float, b: float) -> float:
    return a + b


@app.model("project", max_batch_size=32)
def project(x: TensorInput[np.float32, "batch", 64]) -> TensorOutput[np.float32, "batch", 8]:
    return x @ _W


@app.model("tokens")
def tokens(n: int, delay_ms: float) -> Iterator[str]:
    """n items, ``delay_ms`` apart, as a text generator yields tokens (bounded: bad input must not stream forever)."""
    if not 0 <= n <= MAX_TOKENS or not 0 <= delay_ms <= MAX_DELAY_MS:
        raise InvalidArgument(f"n must be in [0, {MAX_TOKENS}] and delay_ms in [0, {MAX_DELAY_MS}]")
    for i in range(n):
        if delay_ms:
            time.sleep(delay_ms / 1000)
        yield f"tok{i}"


@app.model("checked")
def checked(x: float) -> float:
    """sqrt(x): a negative x is the client's error (INVALID_ARGUMENT), ``BUG_INPUT`` a model bug (INTERNAL)."""
    if x < 0:
        raise InvalidArgument(f"x must be >= 0, got {x}")
    if x == BUG_INPUT:
        raise ValueError("unlucky input")
    return math.sqrt(x)


@app.model("slow")
def slow(ms: float) -> float:
    """Sleeps ``ms`` (at most ``MAX_DELAY_MS``): callers give up on it by deadline or cancel it."""
    if not 0 <= ms <= MAX_DELAY_MS:
        raise InvalidArgument(f"ms must be in [0, {MAX_DELAY_MS}]")
    time.sleep(ms / 1000)
    return ms
