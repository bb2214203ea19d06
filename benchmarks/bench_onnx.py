"""Scenario 7: an ONNX MLP (512→256→10) served by blazerpc-onnx, against the bare session.

The served side is exactly what a user runs: ``blazerpc serve mlp.onnx --name classify``
(batched by default, since the graph's first dimension is dynamic), pinned to CPU 0 and
driven at c=64 with one (1, 512) row per request. The graph's input is ``x`` and its one
output becomes ``result``, so the bench contract's ``PredictClassify`` calls it. The
loadgen's answer check is for the toy classify model, so it is off here and one call is
checked against a numpy forward pass before the load instead.

The baseline, in the same run, calls ``InferenceSession.run`` in a loop on the same core
with the same session options, in batches of the size the server actually formed (mean
rows per batch from ``/metrics``), and also one row at a time. Both sides get one
onnxruntime thread, so the ratio is the cost of everything around the model.

    python -m benchmarks.bench_onnx                   # about 40 s
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import multiprocessing as mp
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

if not __package__:  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import REPO_ROOT, machine_busy_seconds, markdown_table, write_results
from benchmarks.scenarios import ServerSpec, Timing, interleave
from benchmarks.stubs import array_to_tensor, load_stubs, tensor_to_array
from benchmarks.suite import ScenarioResult, blazerpc_cmd, collapse_repeats, info, pick

MODELS_FILE = REPO_ROOT / "plugins" / "blazerpc_onnx" / "tests" / "onnx_models.py"
ONNX_THREADS = 1  # onnxruntime intra-op threads, served and direct alike (one pinned core)
SERVER_CPU = 0
ONNX_ENV: dict[str, str] = {}
COLUMNS = (
    "server", "scenario", "concurrency", "rps", "p50_ms", "p99_ms", "errors", "mean_rows_per_batch",
    "server_cpu", "client_cpu", "other_cpu", "limit", "server_us_per_op",
)


def onnx_models() -> ModuleType:
    """The plugin's test-graph builders (``build_mlp``, ``mlp_reference``), loaded by path."""
    spec = importlib.util.spec_from_file_location("blazerpc_onnx_bench_models", MODELS_FILE)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(MODELS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve_cmd(model_path: Path) -> str:
    """The served MLP plus an ``add`` for the harness probe."""
    return blazerpc_cmd(
        f"{model_path} benchmarks/apps/probe_app.py", "--name", "classify", "--onnx-providers", "cpu",
        "--onnx-intra-op-threads", str(ONNX_THREADS),
    )


async def _check_answer(address: str, models: ModuleType) -> None:
    """One PredictClassify call, compared with a numpy forward pass of the same weights."""
    from grpclib.client import Channel

    stubs = load_stubs()
    host, port = address.rsplit(":", 1)
    channel = Channel(host, int(port))
    try:
        x = np.random.default_rng(1).standard_normal((3, 512), dtype=np.float32)
        stub = stubs.grpclib.InferenceServiceStub(channel)
        reply = await stub.PredictClassify(stubs.pb2.ClassifyRequest(x=array_to_tensor(stubs.pb2, x)))
        got, want = tensor_to_array(reply.result), models.mlp_reference(x)
        if got.shape != (3, 10) or not np.allclose(got, want, atol=1e-4):
            raise AssertionError(f"served MLP answered {got.shape} differing from the reference")
    finally:
        channel.close()


def _pin(cpu: int) -> None:
    if cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})


def direct_rows_per_s(model_path: str, batch: int, duration: float, warmup: float) -> dict[str, Any]:
    """``session.run`` in a loop on ``batch``-row inputs (runs in the pinned child)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = ONNX_THREADS
    session = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((batch, 512), dtype=np.float32) for _ in range(16)]
    end_warm = time.monotonic() + warmup
    while time.monotonic() < end_warm:
        session.run(None, {"x": xs[0]})
    calls = 0
    c0, m0, t0 = time.process_time(), machine_busy_seconds(), time.monotonic()
    while time.monotonic() - t0 < duration:
        for x in xs:
            session.run(None, {"x": x})
        calls += len(xs)
    elapsed = time.monotonic() - t0
    own, machine = time.process_time() - c0, machine_busy_seconds() - m0
    return {
        "server": f"direct-batch{batch}",
        "scenario": "onnx-direct",
        "batch": batch,
        "rps": round(calls / elapsed, 1),
        "rows_per_s": round(calls * batch / elapsed, 1),
        "server_cpu": round(own / elapsed, 3),
        "other_cpu": round(max(0.0, (machine - own) / elapsed), 3),
        "server_us_per_op": round(own * 1e6 / max(calls * batch, 1), 1),  # per row
    }


def run(t: Timing) -> ScenarioResult:
    """Serve the MLP at c=64 (median of ``t.repeats``), then time the bare session."""
    from benchmarks.loadgen import LoadConfig

    models = onnx_models()
    with tempfile.TemporaryDirectory(prefix="blazerpc-bench-onnx-") as tmp:
        path = models.build_mlp(Path(tmp) / "mlp.onnx")
        spec = ServerSpec("blazerpc-onnx", serve_cmd(path), metrics=1, model="classify", env=dict(ONNX_ENV))
        cfg = LoadConfig(method="classify", concurrency=64, duration=t.duration, warmup=t.warmup, validate=False)
        served_rows = interleave([spec], [cfg] * t.repeats, on_ready=lambda srv: asyncio.run(
            _check_answer(srv.address, models)))
        served = collapse_repeats(served_rows)[0]
        per_batch = float(served.get("mean_rows_per_batch") or 1.0)
        batch = max(1, round(per_batch))
        ctx = mp.get_context("spawn")
        direct: list[dict[str, Any]] = []
        for size in sorted({batch, 1}):
            with ProcessPoolExecutor(1, mp_context=ctx, initializer=_pin, initargs=(SERVER_CPU,)) as child:
                row = child.submit(direct_rows_per_s, str(path), size, t.duration, t.warmup).result()
            print(f"  [direct] batch={size} rows/s={row['rows_per_s']:,.0f} cpu={row['server_cpu']:.2f} "
                  f"other_cpu={row['other_cpu']:.2f}", flush=True)
            direct.append(row)
    same = pick(direct, batch=batch)
    one = pick(direct, batch=1)
    served["rows_per_s"] = served["rps"]  # one row per request
    checks = [
        info("7-onnx", f"served rows/s vs session.run at batch {batch}", served["rps"], same["rows_per_s"],
             unit="rows/s",
             note=f"{per_batch:.1f} rows/batch served; server {served['server_us_per_op']} us/row vs direct "
                  f"{same['server_us_per_op']} us/row; limit {served['limit']}"),
        info("7-onnx", "served rows/s vs session.run one row at a time", served["rps"], one["rows_per_s"],
             unit="rows/s", note=f"direct batch 1: {one['server_us_per_op']} us/row"),
    ]
    return ScenarioResult("7-onnx", "ONNX MLP 512->256->10 via blazerpc-onnx vs bare InferenceSession",
                          [served, *direct], checks, {"onnx_threads": ONNX_THREADS, "timing": t.__dict__},
                          columns=(*COLUMNS, "rows_per_s"))


def main(argv: list[str] | None = None) -> int:
    """CLI: run scenario 7, print it, write results/onnx.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    res = run(Timing(args.duration, args.warmup, args.repeats))
    path = write_results("onnx", res.rows, meta=res.to_dict() | {"rows": None})
    print(markdown_table(res.rows, res.columns))
    for c in res.checks:
        print(f"{c.name}: {c.ratio:.3f}  ({c.note})" if c.ratio is not None else f"{c.name}: -")
    print(f"wrote {path}")
    return 0 if all(r.get("errors", 0) == 0 for r in res.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
