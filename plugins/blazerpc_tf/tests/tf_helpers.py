"""Test helpers: TensorProto conversion, ``blazerpc serve`` as a subprocess, a batch recorder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import ml_dtypes
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blazerpc_core import hookimpl
from blazerpc_core.testing import Stubs, compile_stubs, free_port

CLI = [sys.executable, "-m", "blazerpc_core.cli"]


def to_tensor(pb2: Any, value: Any) -> Any:
    """A TensorProto for a numpy array or a TF tensor (bfloat16 as raw 2-byte values)."""
    array = np.ascontiguousarray(value.numpy() if hasattr(value, "numpy") else value)
    return pb2.TensorProto(shape=array.shape, dtype=array.dtype.name, data=array.tobytes())


def from_tensor(message: Any) -> np.ndarray[Any, Any]:
    dtype = np.dtype(ml_dtypes.bfloat16) if message.dtype == "bfloat16" else np.dtype(message.dtype)
    return np.frombuffer(message.data, dtype=dtype).reshape(tuple(message.shape))


class BatchRecorder:
    """A test plugin: records dispatched batches and opens ``gate`` once ``expected`` rows arrived.

    A model that waits on ``gate`` in its first call keeps the batcher busy until every
    other request is queued, so how the rest is batched does not depend on timing.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.batches: list[tuple[int, int]] = []
        self.gate = threading.Event()
        self._dispatched = 0

    @hookimpl
    def blazerpc_startup(self, context: Any) -> None:
        context.batch_events.subscribe(self)

    def batch_dispatched(self, spec: Any, rows: int, requests: int) -> None:
        self.batches.append((rows, requests))
        self._dispatched += rows

    def queue_wait(self, spec: Any, seconds: float) -> None:
        pass

    def queue_depth(self, spec: Any, rows: int) -> None:
        if self._dispatched + rows >= self.expected:
            self.gate.set()


def cli_stubs(targets: Sequence[str], directory: Path, *, env: dict[str, str] | None = None) -> Stubs:
    """Stubs compiled from ``blazerpc proto TARGET...``."""
    out = directory / "proto"
    subprocess.run([*CLI, "proto", *targets, "--output-dir", str(out)], check=True, capture_output=True,
                   env={**os.environ, **(env or {})}, timeout=180)
    return compile_stubs((out / "blaze_service.proto").read_text(), directory / "stubs")


@dataclass
class CliServer:
    address: str
    process: subprocess.Popen[str]


@contextmanager
def serve_cli(*args: str, env: dict[str, str] | None = None, startup_s: float = 120) -> Iterator[CliServer]:
    """Run ``blazerpc serve ARGS --port P`` until health says SERVING; SIGTERM it afterwards."""
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "serve", *args, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, **(env or {})},
    )
    address = f"127.0.0.1:{port}"
    try:
        _wait_serving(address, process, startup_s)
        yield CliServer(address, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def _wait_serving(address: str, process: subprocess.Popen[str], limit_s: float) -> None:
    give_up = time.monotonic() + limit_s
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < give_up:
            if process.poll() is not None:
                out, err = process.communicate(timeout=30)
                raise AssertionError(f"server exited with {process.returncode}:\n{out}\n{err}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"server on {address} did not report SERVING within {limit_s}s")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})})
