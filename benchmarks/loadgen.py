"""Closed-loop gRPC load generator (grpc.aio client, one or more spawned processes).

Each worker process keeps ``concurrency / processes`` calls in flight for
``warmup + duration`` seconds and records every call that completes inside the
measured window. The parent merges the raw latencies so percentiles are exact
across processes (not averages of per-process percentiles).

Why grpc.aio in separate processes: the C core does HTTP/2 and framing outside
the GIL, so one client process drives far more calls per core than a
pure-Python client, and extra processes can be added when it is not enough.
Each result carries the client processes' CPU use so saturation is visible.

    python benchmarks/loadgen.py --target 127.0.0.1:50051 --method add -c 64 -d 5
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import multiprocessing as mp
import os
import queue
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

if not __package__:  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import model
from benchmarks.stubs import array_to_tensor, load_stubs

# Short scenario name -> (rpc name, server-streaming?). ``oip-<model>`` sends the same rows as
# ``<model>`` through the Open Inference Protocol (``ModelInfer``, raw bytes in raw_input_contents).
METHODS: dict[str, tuple[str, bool]] = {
    "add": ("PredictAdd", False),
    "classify": ("PredictClassify", False),
    "slow": ("PredictSlow", False),
    "tokens": ("PredictTokens", True),
    "oip-classify": ("ModelInfer", False),
    "oip-slow": ("ModelInfer", False),
}
#: Methods whose requests are (rows, 512) float32 tensors answered with x @ W (benchmarks/model.py).
TENSOR_METHODS = frozenset({"classify", "slow", "oip-classify", "oip-slow"})

# Channel args: separate TCP connections per channel (the global subchannel
# pool would otherwise share one), never a proxy, no message-size surprises.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
]

CALLS_PER_CHANNEL = 16  # auto channel count: one channel per this many in-flight calls
MAX_AUTO_CHANNELS = 4
DISTINCT_REQUESTS = 16  # per process; in-flight task i sends request i % 16
WRONG_ANSWER = "WRONG_ANSWER"  # error key for an OK status with a wrong payload
ERROR_BACKOFF_S = 0.001  # stops a failing call (e.g. refused) from spinning the loop
SETUP_TIMEOUT_S = 60.0  # spawn + import + connect + validation per worker
CONNECT_TIMEOUT_S = 10.0  # a loopback server that is up connects in milliseconds


class LoadgenError(RuntimeError):
    """A worker could not connect, validate the server's answers, or finish."""


@dataclass
class LoadConfig:
    """What to send, how hard, for how long."""

    target: str = "127.0.0.1:50051"
    method: str = "add"  # add | classify | slow | tokens | oip-classify | oip-slow (or the PredictX rpc name)
    concurrency: int = 16  # total in-flight calls across all processes
    duration: float = 5.0  # measured seconds
    warmup: float = 1.0  # unmeasured seconds before the window
    processes: int = 1
    rows: int = 1  # tensor rows for classify/slow (and their oip- forms)
    tokens: int = 32  # n for the streaming method
    channels: int = 0  # channels per process; 0 = ceil(in-flight / 16), at most 4
    timeout: float = 10.0  # per-call deadline in seconds
    cpus: list[int] | None = None  # pin worker processes to these CPUs
    validate: bool = True  # check every answer (a wrong one counts as WRONG_ANSWER)

    def scenario(self) -> str:
        """Normalise ``method`` to its short name."""
        if self.method in METHODS:
            return self.method
        for short, (rpc, _) in METHODS.items():
            if self.method == rpc:
                return short
        raise ValueError(f"unknown method {self.method!r}; choose from {sorted(METHODS)}")


@dataclass
class LoadResult:
    """Merged outcome of one run. Latencies in ms; rates per second of window."""

    config: LoadConfig
    requests: int  # successful calls completed inside the window
    errors: dict[str, int]  # status code name -> count, inside the window
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    # streaming only (0 for unary): items received, items/s, time to first item
    items: int = 0
    items_per_s: float = 0.0
    ttfi_p50_ms: float = 0.0
    ttfi_p90_ms: float = 0.0
    ttfi_p99_ms: float = 0.0
    # CPU seconds per window second of each worker (1.0 = one busy core)
    client_cpu: list[float] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        """Total failed calls in the window."""
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict including the config and the error total."""
        out = asdict(self)
        out["error_count"] = self.error_count
        return out


def check_loopback(target: str) -> None:
    """Refuse any target that is not this machine: the harness is loopback-only."""
    host = target.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"target {target!r} is not a loopback address")


def split_evenly(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` integers that differ by at most one."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _percentiles(values: np.ndarray[Any, Any], qs: list[float]) -> list[float]:
    """Percentiles in ms (0.0 for an empty sample, so tables never break)."""
    if values.size == 0:
        return [0.0 for _ in qs]
    return [float(v) * 1000.0 for v in np.percentile(values, qs)]


# --------------------------------------------------------------------------- worker


Checker = Callable[[Any], str | None]  # answer -> None if right, else what is wrong


def build_requests(stubs: Any, cfg: LoadConfig, scenario: str, seed: int) -> list[tuple[Any, Checker]]:
    """Distinct requests (reused round-robin by the in-flight tasks), each with a checker.

    Distinct inputs matter: a server that batches requests and splits the
    results back wrongly returns a neighbour's answer, which identical requests
    would hide. Tensor answers are compared with ``x @ W`` computed here (bytes
    first, then within float32 summation-order tolerance).
    """
    pb2 = stubs.pb2
    out: list[tuple[Any, Checker]] = []
    if scenario == "tokens":  # every tokens request is the same (n), and long streams make setup calls costly
        return [(pb2.TokensRequest(n=cfg.tokens), _check_count(cfg.tokens))]
    if scenario == "add":
        for k in range(DISTINCT_REQUESTS):
            a, b = float(seed * DISTINCT_REQUESTS + k) + 0.5, 0.25
            out.append((pb2.AddRequest(a=a, b=b), _check_add(a + b)))
        return out
    if scenario not in TENSOR_METHODS:
        raise ValueError(scenario)
    oip = scenario.startswith("oip-")
    name = scenario.removeprefix("oip-")
    for x in model.request_rows(seed, DISTINCT_REQUESTS, cfg.rows):
        want = model.matmul(x)
        if oip:
            request = oip_messages().ModelInferRequest(
                model_name=name,
                inputs=[{"name": "x", "datatype": "FP32", "shape": list(x.shape)}],
                raw_input_contents=[x.tobytes()],
            )
            out.append((request, _check_oip(want)))
        else:
            req_cls = pb2.ClassifyRequest if name == "classify" else pb2.SlowRequest
            out.append((req_cls(x=array_to_tensor(pb2, x)), _check_tensor(want)))
    return out


def oip_messages() -> Any:
    """The Open Inference Protocol's messages and grpcio stub (tritonclient's compiled ``service_pb2``)."""
    from tritonclient.grpc import service_pb2

    return service_pb2


def _same(got: np.ndarray[Any, Any], want: np.ndarray[Any, Any], want_bytes: bytes) -> str | None:
    if got.tobytes() == want_bytes or model.close_enough(got, want):
        return None
    return f"got {got.dtype}{list(got.shape)} differing from x @ W for this request"


def _check_add(want: float) -> Checker:
    def check(resp: Any) -> str | None:
        return None if resp.result == want else f"PredictAdd returned {resp.result}, want {want}"

    return check


def _check_tensor(want: np.ndarray[Any, Any]) -> Checker:
    want_bytes = want.astype("<f4").tobytes()

    def check(resp: Any) -> str | None:
        t = resp.result
        if t.dtype != "float32" or len(t.data) != len(want_bytes):
            return f"got {t.dtype}{list(t.shape)} with {len(t.data)} bytes, want float32{list(want.shape)}"
        return _same(np.frombuffer(t.data, dtype="<f4").reshape(tuple(t.shape)), want, want_bytes)

    return check


def _check_oip(want: np.ndarray[Any, Any]) -> Checker:
    """ModelInfer's first output: raw bytes (raw_output_contents) or typed contents, as servers choose."""
    want_bytes = want.astype("<f4").tobytes()

    def check(resp: Any) -> str | None:
        if not resp.outputs:
            return "ModelInfer answered no output"
        shape = tuple(resp.outputs[0].shape)
        if resp.raw_output_contents:
            got = np.frombuffer(resp.raw_output_contents[0], dtype="<f4")
        else:
            got = np.asarray(resp.outputs[0].contents.fp32_contents, dtype=np.float32)
        if got.size != want.size:
            return f"ModelInfer answered {got.size} values of shape {list(shape)}, want {list(want.shape)}"
        return _same(got.reshape(want.shape), want, want_bytes)

    return check


def _check_count(n: int) -> Checker:
    def check(count: Any) -> str | None:
        return None if count == n else f"PredictTokens yielded {count} items, want {n}"

    return check


async def _worker_main(
    index: int,
    cfg: LoadConfig,
    concurrency: int,
    to_parent: Any,
    start_event: Any,
    start_at: Any,
) -> None:
    """Connect, validate, wait for the common start, run, report raw samples."""
    import grpc  # imported here so the parent never initialises the C core

    scenario = cfg.scenario()
    rpc, streaming = METHODS[scenario]
    stubs = load_stubs()
    requests = build_requests(stubs, cfg, scenario, seed=index)
    n_channels = cfg.channels or min(MAX_AUTO_CHANNELS, max(1, math.ceil(concurrency / CALLS_PER_CHANNEL)))
    n_channels = max(1, min(n_channels, concurrency))
    channels = [grpc.aio.insecure_channel(cfg.target, options=CHANNEL_OPTIONS) for _ in range(n_channels)]
    try:
        if scenario.startswith("oip-"):
            from tritonclient.grpc import service_pb2_grpc

            methods = [service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer for ch in channels]
        else:
            methods = [getattr(stubs.pb2_grpc.InferenceServiceStub(ch), rpc) for ch in channels]
        for ch in channels:
            try:
                await asyncio.wait_for(ch.channel_ready(), timeout=CONNECT_TIMEOUT_S)
            except TimeoutError:
                raise LoadgenError(f"cannot connect to {cfg.target} within {CONNECT_TIMEOUT_S}s") from None
        for k, (request, check) in enumerate(requests):  # every request once, every channel
            fn = methods[k % n_channels]
            if streaming:
                answer: Any = len([item async for item in fn(request, timeout=cfg.timeout)])
            else:
                answer = await fn(request, timeout=cfg.timeout)
            problem = check(answer)
            if cfg.validate and problem:
                raise LoadgenError(f"wrong answer from {cfg.target} {rpc}: {problem}")
        to_parent.put(("ready", index, None))

        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, start_event.wait, SETUP_TIMEOUT_S):
            raise LoadgenError("parent never signalled start")
        t_start = start_at.value
        w_start = t_start + cfg.warmup
        w_end = w_start + cfg.duration

        lat: list[float] = []
        ttfi: list[float] = []
        items_in_window = 0
        errors: Counter[str] = Counter()
        cpu_marks: list[float] = []

        async def cpu_probe() -> None:
            await asyncio.sleep(max(0.0, w_start - time.monotonic()))
            cpu_marks.append(time.process_time())
            await asyncio.sleep(max(0.0, w_end - time.monotonic()))
            cpu_marks.append(time.process_time())

        validate = cfg.validate

        async def unary_loop(fn: Any, request: Any, check: Checker) -> None:
            while True:
                t0 = time.monotonic()
                if t0 >= w_end:
                    return
                try:
                    resp = await fn(request, timeout=cfg.timeout)
                except grpc.aio.AioRpcError as exc:
                    t1 = time.monotonic()
                    if w_start <= t1 <= w_end:
                        errors[exc.code().name] += 1
                    await asyncio.sleep(ERROR_BACKOFF_S)
                    continue
                t1 = time.monotonic()
                if w_start <= t1 <= w_end:
                    if validate and check(resp):
                        errors[WRONG_ANSWER] += 1
                    else:
                        lat.append(t1 - t0)

        async def stream_loop(fn: Any, request: Any, check: Checker) -> None:
            nonlocal items_in_window
            while True:
                t0 = time.monotonic()
                if t0 >= w_end:
                    return
                first = 0.0
                count = 0
                try:
                    async for _ in fn(request, timeout=cfg.timeout):
                        if count == 0:
                            first = time.monotonic()
                        count += 1
                except grpc.aio.AioRpcError as exc:
                    t1 = time.monotonic()
                    if w_start <= t1 <= w_end:
                        errors[exc.code().name] += 1
                    await asyncio.sleep(ERROR_BACKOFF_S)
                    continue
                t1 = time.monotonic()
                if w_start <= t1 <= w_end:
                    if validate and check(count):
                        errors[WRONG_ANSWER] += 1
                        continue
                    lat.append(t1 - t0)
                    if count:
                        ttfi.append(first - t0)
                    items_in_window += count

        await asyncio.sleep(max(0.0, t_start - time.monotonic()))
        body = stream_loop if streaming else unary_loop
        tasks = [
            asyncio.create_task(body(methods[i % n_channels], *requests[i % len(requests)])) for i in range(concurrency)
        ]
        probe = asyncio.create_task(cpu_probe())
        # Calls still in flight at w_end are not counted; bound the wait for them.
        done, pending = await asyncio.wait(tasks, timeout=max(0.0, w_end - time.monotonic()) + cfg.timeout + 1.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                errors[f"EXCEPTION:{type(task.exception()).__name__}"] += 1
        await probe
        cpu = (cpu_marks[1] - cpu_marks[0]) / cfg.duration if len(cpu_marks) == 2 else 0.0
        payload = {
            "lat": np.asarray(lat, dtype=np.float64).tobytes(),
            "ttfi": np.asarray(ttfi, dtype=np.float64).tobytes(),
            "items": items_in_window,
            "errors": dict(errors),
            "cpu": cpu,
        }
        to_parent.put(("result", index, payload))
    finally:
        for ch in channels:
            await ch.close()


def _worker(
    index: int,
    cfg: LoadConfig,
    concurrency: int,
    to_parent: Any,
    start_event: Any,
    start_at: Any,
) -> None:
    """Process entry point: pin first so the gRPC core threads inherit the mask."""
    if cfg.cpus:
        os.sched_setaffinity(0, set(cfg.cpus))
    try:
        asyncio.run(_worker_main(index, cfg, concurrency, to_parent, start_event, start_at))
    except Exception:  # the parent prints it; printing here too would double it
        to_parent.put(("error", index, traceback.format_exc()))
        to_parent.close()
        to_parent.join_thread()
        raise SystemExit(1) from None


# --------------------------------------------------------------------------- parent


def _merge(cfg: LoadConfig, payloads: list[dict[str, Any]]) -> LoadResult:
    """Pool raw samples from every worker into one result."""
    lat = np.concatenate([np.frombuffer(p["lat"], dtype=np.float64) for p in payloads])
    ttfi = np.concatenate([np.frombuffer(p["ttfi"], dtype=np.float64) for p in payloads])
    errors: Counter[str] = Counter()
    for p in payloads:
        errors.update(p["errors"])
    items = sum(int(p["items"]) for p in payloads)
    p50, p90, p99, p999 = _percentiles(lat, [50, 90, 99, 99.9])
    t50, t90, t99 = _percentiles(ttfi, [50, 90, 99])
    return LoadResult(
        config=cfg,
        requests=int(lat.size),
        errors=dict(sorted(errors.items())),
        duration_s=cfg.duration,
        rps=lat.size / cfg.duration,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        p999_ms=p999,
        mean_ms=float(lat.mean()) * 1000.0 if lat.size else 0.0,
        max_ms=float(lat.max()) * 1000.0 if lat.size else 0.0,
        items=items,
        items_per_s=items / cfg.duration,
        ttfi_p50_ms=t50,
        ttfi_p90_ms=t90,
        ttfi_p99_ms=t99,
        client_cpu=[round(float(p["cpu"]), 3) for p in payloads],
    )


WindowHook = Callable[[Literal["start", "end"]], None]


def run_load(cfg: LoadConfig, *, on_window: WindowHook | None = None) -> LoadResult:
    """Run one closed-loop measurement and return merged results.

    ``on_window`` is called in the parent with "start"/"end" at the edges of
    the measured window (e.g. to sample the server's CPU time).
    Raises LoadgenError if any worker fails to connect, validate or report.
    """
    check_loopback(cfg.target)
    cfg.scenario()
    if cfg.concurrency < 1 or cfg.processes < 1 or cfg.duration <= 0 or cfg.warmup < 0:
        raise ValueError("need concurrency >= 1, processes >= 1, duration > 0, warmup >= 0")
    shares = [c for c in split_evenly(cfg.concurrency, min(cfg.processes, cfg.concurrency)) if c]

    ctx = mp.get_context("spawn")
    to_parent = ctx.Queue()
    start_event = ctx.Event()
    start_at = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=_worker,
            args=(i, cfg, share, to_parent, start_event, start_at),
            name=f"loadgen-{i}",
            daemon=True,
        )
        for i, share in enumerate(shares)
    ]
    for p in procs:
        p.start()
    payloads: dict[int, dict[str, Any]] = {}
    try:

        def receive(kind: str, deadline: float) -> tuple[int, Any]:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LoadgenError(f"timed out waiting for workers ({kind})")
                try:
                    msg_kind, idx, data = to_parent.get(timeout=min(remaining, 0.5))
                except queue.Empty:
                    dead = [p.name for p in procs if p.exitcode not in (None, 0)]
                    if dead:
                        raise LoadgenError(f"worker(s) died: {dead}") from None
                    continue
                if msg_kind == "error":
                    raise LoadgenError(f"worker {idx} failed:\n{data}")
                if msg_kind != kind:
                    raise LoadgenError(f"unexpected {msg_kind!r} from worker {idx}")
                return idx, data

        deadline = time.monotonic() + SETUP_TIMEOUT_S
        for _ in procs:
            receive("ready", deadline)
        start_at.value = time.monotonic() + 0.05
        start_event.set()
        w_start = start_at.value + cfg.warmup
        w_end = w_start + cfg.duration
        if on_window is not None:
            time.sleep(max(0.0, w_start - time.monotonic()))
            on_window("start")
            time.sleep(max(0.0, w_end - time.monotonic()))
            on_window("end")
        deadline = w_end + cfg.timeout + 15.0
        for _ in procs:
            idx, data = receive("result", deadline)
            payloads[idx] = data
    finally:
        for p in procs:
            p.join(timeout=5.0)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5.0)
            if p.is_alive():
                p.kill()
                p.join()
        to_parent.close()
        to_parent.join_thread()
    return _merge(cfg, [payloads[i] for i in sorted(payloads)])


def format_result(res: LoadResult) -> str:
    """One human-readable line per run."""
    cfg = res.config
    line = (
        f"{cfg.scenario():8s} c={cfg.concurrency:<4d} procs={cfg.processes} "
        f"rps={res.rps:10.1f} p50={res.p50_ms:7.3f}ms p90={res.p90_ms:7.3f}ms "
        f"p99={res.p99_ms:7.3f}ms errors={res.error_count} client_cpu={res.client_cpu}"
    )
    if METHODS[cfg.scenario()][1]:
        line += f" items/s={res.items_per_s:.1f} ttfi_p50={res.ttfi_p50_ms:.3f}ms"
    return line


def parse_cpus(text: str | None) -> list[int] | None:
    """Parse "1" / "1,3" / "2-3" into a CPU list (None for empty)."""
    if not text:
        return None
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def _int_list(text: str) -> list[int]:
    """Parse "1,16,64"."""
    return [int(x) for x in text.split(",") if x]


def build_arg_parser(matrix: bool = False) -> argparse.ArgumentParser:
    """Loadgen options; with ``matrix`` method/concurrency/rows take comma lists."""
    p = argparse.ArgumentParser(description="Closed-loop grpc.aio load generator (loopback only)")
    if not matrix:
        p.add_argument("--target", default="127.0.0.1:50051", help="host:port (loopback only)")
    lists = " (comma list)" if matrix else ""
    num: Any = _int_list if matrix else int
    p.add_argument("--method", "-m", default="add", help=f"one of {sorted(METHODS)}{lists}")
    p.add_argument(
        "--concurrency",
        "-c",
        type=num,
        default="16",
        help=f"total in-flight calls{lists}",
    )
    p.add_argument("--rows", type=num, default="1", help=f"tensor rows, classify/slow/oip-*{lists}")
    p.add_argument("--duration", "-d", type=float, default=5.0, help="measured seconds")
    p.add_argument("--warmup", "-w", type=float, default=1.0, help="unmeasured seconds first")
    p.add_argument("--processes", "-p", type=int, default=1, help="client worker processes")
    p.add_argument("--tokens", type=int, default=32, help="items per stream (tokens)")
    p.add_argument("--channels", type=int, default=0, help="channels per process (0 = auto)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-call deadline, s")
    p.add_argument("--cpus", default=None, help='pin clients, e.g. "1" or "1-3"')
    p.add_argument("--no-validate", action="store_true", help="skip the answer check")
    return p


def config_from_args(args: argparse.Namespace, **overrides: Any) -> LoadConfig:
    """Build a LoadConfig from parsed CLI arguments (overrides win)."""
    values: dict[str, Any] = {
        "target": getattr(args, "target", "127.0.0.1:0"),
        "method": args.method,
        "concurrency": args.concurrency,
        "duration": args.duration,
        "warmup": args.warmup,
        "processes": args.processes,
        "rows": args.rows,
        "tokens": args.tokens,
        "channels": args.channels,
        "timeout": args.timeout,
        "cpus": parse_cpus(args.cpus),
        "validate": not args.no_validate,
    }
    values.update(overrides)
    return LoadConfig(**values)


def matrix_configs(args: argparse.Namespace) -> list[LoadConfig]:
    """Cross product method x rows x concurrency from a ``matrix`` parser.

    Rows only vary for tensor methods; the others run once per concurrency.
    """
    configs: list[LoadConfig] = []
    for method in args.method.split(","):
        tensor = method in (*TENSOR_METHODS, "PredictClassify", "PredictSlow")
        for rows in args.rows if tensor else [1]:
            for conc in args.concurrency:
                configs.append(config_from_args(args, method=method, rows=rows, concurrency=conc))
    return configs


def main(argv: list[str] | None = None) -> int:
    """CLI: run once against an already-running server, print a line (or JSON)."""
    parser = build_arg_parser()
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = parser.parse_args(argv)
    try:
        res = run_load(config_from_args(args))
    except (LoadgenError, ValueError) as exc:
        print(f"loadgen: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res.to_dict(), indent=2) if args.json else format_result(res))
    return 0 if res.error_count == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
