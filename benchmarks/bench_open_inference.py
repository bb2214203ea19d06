"""The Open Inference Protocol against the native rpc: one batched matmul model, both protocols, one server, one run.

Each request carries one (1, 512) float32 row and gets ``x @ W`` (1, 10) back, as in the
peers' measurements (``../shared/PEERS.md``). One ``blazerpc serve`` process pinned to
CPU 0 serves the model (batched, at most 32 rows per call); a ``grpc.aio`` closed-loop
load generator pinned to CPU 1 sends it ``PredictMatmul`` (``TensorProto``) and
``ModelInfer`` (``raw_input_contents``) requests, alternating protocol per window so the
machine's drift hits both alike. Every answer is checked. The verdict is the median of
the paired per-repeat ratios ModelInfer / native at c=64 (target >= 0.9x).

    python -m benchmarks.bench_open_inference                 # 5 paired repeats of 10 s windows (about 2.5 min)
    python -m benchmarks.bench_open_inference --quick         # 1 repeat of 3 s windows

Writes ``benchmarks/results/open_inference.json``. This module is also the server's
TARGET (``benchmarks/bench_open_inference.py:app``), so its top level only defines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from blazerpc_core import BlazeApp, TensorInput, TensorOutput

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "open_inference.json"
WEIGHTS = np.random.default_rng(7).standard_normal((512, 10)).astype(np.float32)
DISTINCT = 16
#: PyTriton 0.7 and blazerpc's native rpc on a quiet machine of the same kind (../shared/PEERS.md), c=64:
#: req/s, p50 and p99 ms, server CPU µs per request. Server µs/request is what compares across runs
#: when this machine is busy with other work (req/s then follows the CPU the server gets).
PYTRITON_C64 = {"rps": 2469, "p50_ms": 26.0, "p99_ms": 37.0, "server_us_per_request": 400}
NATIVE_MAIN_C64 = {"rps": 2641, "p50_ms": 22.0, "p99_ms": 47.0, "server_us_per_request": 375}

app = BlazeApp()


@app.model("matmul", max_batch_size=32)
def matmul(x: TensorInput[np.float32, "batch", 512]) -> TensorOutput[np.float32, "batch", 10]:
    return x @ WEIGHTS


# -- requests, built and checked in the load process --------------------------------------


def _rows() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.standard_normal((1, 512)).astype(np.float32) for _ in range(DISTINCT)]


def _native_codec() -> tuple[str, list[bytes], Any]:
    from blazerpc_core.build import assemble

    schema = assemble(app, load_entry_points=False).schema()
    from google.protobuf import message_factory

    request = message_factory.GetMessageClass(schema.pool.FindMessageTypeByName("blazerpc.MatmulRequest"))
    response = message_factory.GetMessageClass(schema.pool.FindMessageTypeByName("blazerpc.MatmulResponse"))
    bodies = [request(x={"shape": [1, 512], "dtype": "float32", "data": row.tobytes()}).SerializeToString()
              for row in _rows()]

    def read(data: bytes) -> np.ndarray:
        result = response.FromString(data).result
        return np.frombuffer(result.data, dtype=np.float32).reshape(list(result.shape))

    return "/blazerpc.InferenceService/PredictMatmul", bodies, read


def _oip_codec() -> tuple[str, list[bytes], Any]:
    from blazerpc_core.defaults.open_inference.descriptors import messages

    m = messages()
    bodies = [m.ModelInferRequest(model_name="matmul", inputs=[{"name": "x", "datatype": "FP32", "shape": [1, 512]}],
                                  raw_input_contents=[row.tobytes()]).SerializeToString() for row in _rows()]

    def read(data: bytes) -> np.ndarray:
        answer = m.ModelInferResponse.FromString(data)
        return np.frombuffer(answer.raw_output_contents[0], dtype=np.float32).reshape(list(answer.outputs[0].shape))

    return "/inference.GRPCInferenceService/ModelInfer", bodies, read


async def _load(target: str, protocol: str, concurrency: int, warmup: float, duration: float,
                marks: Any) -> dict[str, Any]:
    import grpc

    path, bodies, read = _native_codec() if protocol == "native" else _oip_codec()
    expected = [row @ WEIGHTS for row in _rows()]
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_http_proxy", 0)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(max(1, min(4, concurrency // 16)))]
    calls = [channel.unary_unary(path) for channel in channels]
    for index, call in enumerate(calls):  # connect and check one answer on each channel first
        np.testing.assert_allclose(read(await call(bodies[index], timeout=10)), expected[index], rtol=1e-4, atol=1e-4)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    wrong = 0
    start = time.perf_counter() + warmup
    end = start + duration

    async def worker(slot: int) -> None:
        nonlocal wrong
        call, index = calls[slot % len(calls)], slot % DISTINCT
        while (now := time.perf_counter()) < end:
            try:
                answer = await call(bodies[index], timeout=30)
            except grpc.aio.AioRpcError as exc:
                if now >= start:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                continue
            done = time.perf_counter()
            if not np.allclose(read(answer), expected[index], rtol=1e-4, atol=1e-4):
                wrong += 1
            if start <= now and done <= end:
                latencies.append(done - now)

    async def mark() -> None:
        await asyncio.sleep(start - time.perf_counter())
        cpu0 = time.process_time()
        marks.put("start")
        await asyncio.sleep(end - time.perf_counter())
        marks.put("end")
        mark.cpu = time.process_time() - cpu0  # type: ignore[attr-defined]

    await asyncio.gather(mark(), *(worker(i) for i in range(concurrency)))
    for channel in channels:
        await channel.close()
    ms = np.array(latencies) * 1000
    return {
        "protocol": protocol, "concurrency": concurrency, "requests": len(latencies), "rps": len(latencies) / duration,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        "errors": errors, "wrong_answers": wrong, "client_cpu": mark.cpu / duration,  # type: ignore[attr-defined]
    }


def _load_process(cpu: int | None, args: tuple[Any, ...], results: Any) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    marks = args[-1]
    try:
        results.put(asyncio.run(_load(*args)))
    except BaseException:
        marks.put(traceback.format_exc())  # the parent waits on the marks: tell it why there are none
        raise


# -- the run ---------------------------------------------------------------------------------


def _window(target: str, protocol: str, concurrency: int, warmup: float, duration: float, server: int,
            pin: bool) -> dict[str, Any]:
    from benchmarks.harness import cpu_seconds, machine_busy_seconds  # the parent's only: workers stay light

    ctx = mp.get_context("spawn")
    marks, results = ctx.Queue(), ctx.Queue()
    process = ctx.Process(target=_load_process,
                          args=(1 if pin else None, (target, protocol, concurrency, warmup, duration, marks), results))
    process.start()
    _expect(marks, "start")
    cpu0, busy0 = cpu_seconds(server), machine_busy_seconds()
    _expect(marks, "end")
    cpu1, busy1 = cpu_seconds(server), machine_busy_seconds()
    row: dict[str, Any] = results.get(timeout=120)
    row["server_cpu"] = (cpu1 - cpu0) / duration
    # Everything else that ran meanwhile (other sessions' tests, say), in cores: noise when >= 0.2.
    row["other_cpu"] = max(0.0, (busy1 - busy0) / duration - row["server_cpu"] - row["client_cpu"])
    row["server_us_per_request"] = row["server_cpu"] * 1e6 / row["rps"] if row["rps"] else None
    process.join(30)
    return row


def _expect(marks: Any, mark: str) -> None:
    got = marks.get(timeout=300)
    if got != mark:
        raise RuntimeError(f"the load process failed before its {mark!r} mark:\n{got}")


def _wait_ready(address: str, deadline: float) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        while time.monotonic() < deadline:
            try:
                if check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"the server on {address} did not become ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat of 3 s windows")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server to CPU 0 and load to CPU 1")
    parser.add_argument("--output", type=Path, default=RESULTS)
    options = parser.parse_args(argv)
    repeats, duration, warmup = (1, 3.0, 1.0) if options.quick else (options.repeats, options.duration, options.warmup)
    pin = not options.no_pin and len(os.sched_getaffinity(0)) >= 2
    if not __package__:  # run as a script: make the `benchmarks` package importable
        sys.path.insert(0, str(ROOT))
    from benchmarks.harness import bench_lock

    with bench_lock():
        rows = _run(repeats, duration, warmup, pin)
    _report(rows, options, repeats, duration, warmup, pin)
    return 0


def _run(repeats: int, duration: float, warmup: float, pin: bool) -> list[dict[str, Any]]:
    from blazerpc_core.testing import free_port

    port = free_port()
    command = [sys.executable, "-m", "blazerpc_core.cli", "serve", f"{Path(__file__).resolve()}:app",
               "--port", str(port), "--log-level", "warning"]
    if pin:
        command = ["taskset", "-c", "0", *command]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    rows: list[dict[str, Any]] = []
    try:
        _wait_ready(address, time.monotonic() + 60)
        for concurrency in (1, 16):  # context, once each
            for protocol in ("native", "open-inference"):
                rows.append({**_window(address, protocol, concurrency, warmup, duration / 2, server.pid, pin),
                             "repeat": 0})
        for repeat in range(repeats):
            for protocol in ("native", "open-inference"):
                rows.append({**_window(address, protocol, 64, warmup, duration, server.pid, pin), "repeat": repeat})
    finally:
        server.terminate()
        server.wait(30)
    return rows


def _report(rows: list[dict[str, Any]], options: argparse.Namespace, repeats: int, duration: float, warmup: float,
            pin: bool) -> None:
    c64 = [r for r in rows if r["concurrency"] == 64]
    ratios = [oip["rps"] / native["rps"] for native, oip in zip(c64[::2], c64[1::2], strict=True)]
    ratio = statistics.median(ratios)
    cost_ratios = [oip["server_us_per_request"] / native["server_us_per_request"]
                   for native, oip in zip(c64[::2], c64[1::2], strict=True)]
    best = {p: statistics.median(r["rps"] for r in c64 if r["protocol"] == p) for p in ("native", "open-inference")}
    cost = {p: statistics.median(r["server_us_per_request"] for r in c64 if r["protocol"] == p)
            for p in ("native", "open-inference")}
    summary = {
        "c64_ratio_open_inference_over_native": ratio, "paired_ratios": ratios, "target": 0.9,
        "c64_server_us_per_request_ratio": statistics.median(cost_ratios), "paired_cost_ratios": cost_ratios,
        "max_other_cpu": max(r["other_cpu"] for r in rows),
        "verdict": "PASS" if ratio >= 0.9 else "MISS", "median_rps": best,
        "pytriton_c64_from_peers": PYTRITON_C64, "native_main_c64_from_peers": NATIVE_MAIN_C64,
        "open_inference_vs_pytriton": best["open-inference"] / PYTRITON_C64["rps"],
        "median_server_us_per_request": cost,
        "open_inference_server_cost_vs_pytriton": cost["open-inference"] / PYTRITON_C64["server_us_per_request"],
        "pinned": pin, "repeats": repeats, "duration_s": duration, "warmup_s": warmup,
        "command": " ".join(["python -m benchmarks.bench_open_inference", *sys.argv[1:]]),
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")
    print(f"{'protocol':<16} {'c':>3} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'srv µs/req':>10} {'client cpu':>10} "
          f"{'other cpu':>9}")
    for r in rows:
        print(f"{r['protocol']:<16} {r['concurrency']:>3} {r['rps']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
              f"{r['server_us_per_request'] or 0:>10.0f} {r['client_cpu']:>10.2f} {r['other_cpu']:>9.2f}"
              + (f"  errors={r['errors']}" if r["errors"] else "") + (f"  WRONG={r['wrong_answers']}"
                                                                       if r["wrong_answers"] else ""))
    print(f"c=64 server µs/request ModelInfer / native: {summary['c64_server_us_per_request_ratio']:.3f}x; "
          f"max other_cpu {summary['max_other_cpu']:.2f} cores")
    print(f"c=64 ModelInfer / native: {ratio:.3f}x (paired: {', '.join(f'{x:.3f}' for x in ratios)}; target 0.9x) "
          f"{summary['verdict']}; ModelInfer vs PyTriton's {PYTRITON_C64['rps']} req/s (PEERS.md): "
          f"{summary['open_inference_vs_pytriton']:.2f}x; server µs/request {cost['open-inference']:.0f} vs PyTriton's "
          f"{PYTRITON_C64['server_us_per_request']} ({summary['open_inference_server_cost_vs_pytriton']:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
