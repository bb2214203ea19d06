"""The benchmark's model, one definition for every server that serves it and every client that checks it.

* ``matmul``: each request sends one (1, 512) float32 row and gets ``x @ W`` (1, 10) float32
  back, ``W`` fixed by a seed (the issue's main-table model);
* ``accelerator``: the same answer, but every call holds one device for 2 ms whatever the
  batch size, and calls cannot overlap (a lock, GIL released while held), as on one GPU.

Only numpy here: the raw server, blazerpc's apps, the peers' servers (in their own
virtualenvs) and the load generator all import it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

COLS = 512
OUTPUTS = 10
#: Seconds one call of the accelerator-like model holds the device, whatever its batch size.
DEVICE_SECONDS = 0.002
WEIGHTS = np.random.default_rng(7).standard_normal((COLS, OUTPUTS)).astype(np.float32)

_device = threading.Lock()


def matmul(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``x @ W`` for an (n, 512) float32 batch: (n, 10) float32."""
    return x @ WEIGHTS


def accelerator(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``x @ W`` after holding the one device for 2 ms; a second caller waits for the first."""
    with _device:
        time.sleep(DEVICE_SECONDS)
        return x @ WEIGHTS


def request_rows(seed: int, count: int, rows: int = 1) -> list[np.ndarray[Any, Any]]:
    """``count`` distinct (rows, 512) float32 inputs: a batcher that mixes callers up shows."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((rows, COLS), dtype=np.float32) for _ in range(count)]


def close_enough(got: np.ndarray[Any, Any], want: np.ndarray[Any, Any]) -> bool:
    """Same shape and values up to float32 summation order (a batch of 32 may sum differently from 1)."""
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-4, atol=1e-4))
