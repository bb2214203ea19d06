"""Model lifecycle under load: what a load, reload and unload cost, and what a reload does to calls in flight.

Two measurements, both against a real ``blazerpc serve`` process (pinned to core 0 when
``taskset`` exists; the load generator runs here, pinned to core 1):

1. **Change cost with 50 models served**: the time ``LoadModel``, ``ReloadModel`` and
   ``UnloadModel`` take (management rpcs, round trip) while 50 other models are served
   (each change assembles the schema again in a fresh descriptor pool). Median of 5.
2. **Reload under load**: 64 calls kept in flight (grpc.aio, closed loop) against a
   batched class model for 6 s; a ``ReloadModel`` at 2 s swaps in new weights. Reports
   failed calls (must be 0) and the p99 latency in the reload window against the p99
   before it, in the same run.

    python -m benchmarks.bench_lifecycle          # writes benchmarks/results/lifecycle.json
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lifecycle.json"

MANY = textwrap.dedent("""
    from blazerpc_core import BlazeApp

    app = BlazeApp()
    for i in range(50):
        def make(i):
            def model(a: float, b: float) -> float:
                return a + b * i
            return model
        app.model(f"m{i:02d}")(make(i))
""")
EXTRA = textwrap.dedent("""
    from blazerpc_core import BlazeApp

    app = BlazeApp()

    @app.model("extra")
    class Extra:
        def __init__(self) -> None:
            self.k = 3.0

        def __call__(self, x: float) -> float:
            return x * self.k
""")
MATMUL = textwrap.dedent("""
    import numpy as np
    from blazerpc_core import BlazeApp, TensorInput, TensorOutput

    app = BlazeApp()

    @app.model("matmul", max_batch_size=32)
    class Matmul:
        def __init__(self) -> None:
            self.w = np.full((512, 10), {value}, np.float32)

        def warmup(self) -> None:
            self(np.zeros((1, 512), np.float32))

        def __call__(self, x: TensorInput[np.float32, "batch", 512]) -> TensorOutput[np.float32, "batch", 10]:
            return x @ self.w
""")


def _pin(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def _serve(repo: Path, port: int, *targets: str) -> subprocess.Popen[str]:
    command = [*_pin(0), sys.executable, "-m", "blazerpc_core.cli", "serve", *targets, "--port", str(port),
               "--model-control", "explicit", "--model-repository", str(repo), "--log-level", "WARNING"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_serving(address: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {process.stdout.read() if process.stdout else ''}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise RuntimeError("server not ready")


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def change_costs(workdir: Path, repeats: int = 5) -> dict[str, Any]:
    from blazerpc_core.testing import free_port, management_stubs

    repo = workdir / "repo"
    repo.mkdir()
    (workdir / "many.py").write_text(MANY)
    (repo / "extra.py").write_text(EXTRA)
    port = free_port()
    process = _serve(repo, port, str(workdir / "many.py"))
    address = f"127.0.0.1:{port}"
    timings: dict[str, list[float]] = {"load": [], "reload": [], "unload": []}
    try:
        _wait_serving(address, process)
        mgmt = management_stubs(workdir / "stubs")
        with grpc.insecure_channel(address) as channel:
            stub = mgmt.pb2_grpc.ManagementServiceStub(channel)
            for _ in range(repeats):
                for change, call in (
                    ("load", lambda: stub.LoadModel(mgmt.pb2.LoadModelRequest(source="extra.py"), timeout=30)),
                    ("reload", lambda: stub.ReloadModel(mgmt.pb2.ModelRef(name="extra"), timeout=30)),
                    ("unload", lambda: stub.UnloadModel(mgmt.pb2.ModelRef(name="extra"), timeout=30)),
                ):
                    started = time.perf_counter()
                    call()
                    timings[change].append((time.perf_counter() - started) * 1000)
            served = len(stub.ListModels(mgmt.pb2.ListModelsRequest(), timeout=10).models)
    finally:
        _stop(process)
    return {"models_served": served, **{f"{k}_ms_median": round(statistics.median(v), 1) for k, v in timings.items()},
            **{f"{k}_ms_all": [round(t, 1) for t in v] for k, v in timings.items()}}


async def _load(address: str, seconds: float, concurrency: int) -> list[tuple[float, float, str]]:
    """Closed-loop calls; (start time, latency, status name) per call."""
    body = np.ones((1, 512), np.float32).tobytes()
    tensor = b"\x0a\x03\x01\x80\x04" + b"\x12\x07float32" + b"\x1a" + _varint(len(body)) + body
    request = b"\x0a" + _varint(len(tensor)) + tensor
    done: list[tuple[float, float, str]] = []
    stop_at = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary("/blazerpc.InferenceService/PredictMatmul")

        async def one() -> None:
            while time.monotonic() < stop_at:
                started = time.monotonic()
                try:
                    await call(request, timeout=10)
                    status = "OK"
                except grpc.aio.AioRpcError as exc:
                    status = exc.code().name
                done.append((started, time.monotonic() - started, status))

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return done


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def reload_under_load(workdir: Path, concurrency: int = 64, seconds: float = 6.0) -> dict[str, Any]:
    from blazerpc_core.testing import free_port, management_stubs

    repo = workdir / "repo2"
    repo.mkdir()
    (repo / "matmul.py").write_text(MATMUL.format(value=1.0))
    port = free_port()
    process = _serve(repo, port)
    address = f"127.0.0.1:{port}"
    events: dict[str, float] = {}
    try:
        _wait_serving(address, process)
        mgmt = management_stubs(workdir / "stubs2")

        def reload() -> None:
            time.sleep(2.0)
            (repo / "matmul.py").write_text(MATMUL.format(value=2.0))
            with grpc.insecure_channel(address) as channel:
                events["start"] = time.monotonic()
                mgmt.pb2_grpc.ManagementServiceStub(channel).ReloadModel(mgmt.pb2.ModelRef(name="matmul"), timeout=60)
                events["end"] = time.monotonic()

        import threading

        reloader = threading.Thread(target=reload)
        if _pin(1):
            os.sched_setaffinity(0, {1})
        reloader.start()
        calls = asyncio.run(_load(address, seconds, concurrency))
        reloader.join()
    finally:
        _stop(process)
    start, end = events["start"], events["end"] + 0.5
    settled = min(at for at, _, _ in calls) + 0.5  # connections open and the model warm
    before = [lat for at, lat, s in calls if settled <= at < start and s == "OK"]
    during = [lat for at, lat, s in calls if start <= at <= end and s == "OK"]
    failed = [s for _, _, s in calls if s != "OK"]

    def p99(values: list[float]) -> float:
        return round(float(np.percentile(values, 99)) * 1000, 2) if values else float("nan")

    return {
        "concurrency": concurrency, "calls": len(calls), "failed_calls": len(failed),
        "failed_statuses": sorted(set(failed)), "reload_seconds": round(events["end"] - events["start"], 3),
        "p99_ms_before": p99(before), "p99_ms_during_reload": p99(during),
        "p99_ratio_during_vs_before": round(p99(during) / p99(before), 2) if before and during else None,
        "throughput_rps": round(len(calls) / seconds),
    }


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="blazerpc-lifecycle-") as tmp:
        workdir = Path(tmp)
        costs = change_costs(workdir)
        print(f"change cost with {costs['models_served']} models served: load {costs['load_ms_median']} ms, "
              f"reload {costs['reload_ms_median']} ms, unload {costs['unload_ms_median']} ms (median of 5)")
        under_load = reload_under_load(workdir)
        print(f"reload under load (c={under_load['concurrency']}): {under_load['failed_calls']} failed of "
              f"{under_load['calls']}; p99 {under_load['p99_ms_before']} ms before, "
              f"{under_load['p99_ms_during_reload']} ms during ({under_load['p99_ratio_during_vs_before']}x)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"change_costs": costs, "reload_under_load": under_load}, indent=2) + "\n")
    return 0 if under_load["failed_calls"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
