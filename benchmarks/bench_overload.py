"""Overload and soak: goodput when callers give up on their deadlines, and a long varied run's leaks.

Not part of the suite nor of CI. Every server is a ``blazerpc serve`` subprocess on
127.0.0.1, pinned to core 0 with ``taskset``; the load generator is this process (grpc.aio,
closed loop), pinned to core 1. The machine is shared, so the verdicts are ratios of two
windows of the same run, and every window records the CPU the rest of the machine used.

1. **Goodput under deadline overload** (``apps/overload_app.py``). The regression it guards:
   64 clients with 50 ms deadlines against a 20 ms sync unbatched model once got 13 OK
   calls of 21,886, because the model kept running calls whose caller had gone. Per
   variant (``sleepy``: ``time.sleep(0.02)``, so calls overlap on the model pool;
   ``spin``: 20 ms of thread CPU in bytecode, so they share the core and the GIL) and per
   repeat, a fresh server gets a *capacity* window (the same clients, 5 s deadlines: OK
   calls/s is what the model can do) and a fresh server an *overload* window (50 ms
   deadlines). Goodput = overload OK/s ÷ capacity OK/s (target ≥ 0.9). The app counts
   its runs and those that finished after the caller's deadline (each request carries it
   as ``time.monotonic()`` seconds): the share of the model's time wasted.
2. **Soak** (``apps/soak_app.py``). 32 clients for ``--soak-seconds`` mix a scalar model,
   a batched tensor model, a server stream (read whole, or cancelled after 3 items),
   bad input, a model bug, deadlines that expire, cancels mid-call and a new connection
   per call. Every answer is checked and every status compared with the one its kind
   should get (UNKNOWN, or INTERNAL for a client's input, is a defect). The server's RSS,
   open FDs and threads are sampled every ``--sample-every`` seconds.

    python -m benchmarks.bench_overload                        # about 9 min: results/overload.json
    python -m benchmarks.bench_overload --soak-seconds 20 --repeats 1 -o /tmp/overload.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Self

import grpc
import numpy as np

if not __package__:  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.apps.soak_app import BUG_INPUT, COLS, weights
from benchmarks.harness import bench_lock, cpu_seconds, free_port, machine_busy_seconds

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "benchmarks" / "apps"
OVERLOAD_APP = APPS / "overload_app.py"
SOAK_APP = APPS / "soak_app.py"
RESULTS = ROOT / "benchmarks" / "results" / "overload.json"
LOG_DIR = ROOT / "benchmarks" / "results" / "logs"
MODULE = "benchmarks.bench_overload"
HOST = "127.0.0.1"
SERVICE = "blazerpc.InferenceService"
SERVER_CORE, CLIENT_CORE = 0, 1
#: One TCP connection per 16 in-flight calls (at most 4), as the suite's load generator.
CALLS_PER_CHANNEL, MAX_CHANNELS = 16, 4
CHANNEL_OPTIONS: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_http_proxy", 0)]
#: A client that got an error waits this long before its next call (as the suite's load generator).
ERROR_BACKOFF_S = 0.001
GOODPUT_TARGET = 0.9
#: Other processes using this many cores during a window make its figures doubtful.
NOISY_CORES = 0.2
#: Status details grpcio gives a call that the client itself ended: its deadline timer, its cancel.
#: Each such call the server had not finished costs the server's rapid-reset budget a token.
LOCAL_DEADLINE, LOCAL_CANCEL = "Deadline Exceeded", "Locally cancelled by application!"


def log(message: str) -> None:
    """One progress line, flushed so a long phase shows it is alive."""
    print(message, flush=True)


# --------------------------------------------------------------------------- processes


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict (empty once the process is gone)."""
    with contextlib.suppress(OSError):
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}
    return {}


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


class Server:
    """``blazerpc serve APP`` pinned to one core; a context manager, so it is stopped on every exit path.

    It runs in its own session (a Ctrl-C in the terminal reaches this process, which then
    stops it) and, where ``setpriv`` exists, gets SIGTERM if this process dies without
    stopping it.
    """

    def __init__(self, app: Path, name: str, *, core: int | None, extra: list[str] | None = None) -> None:
        self.app, self.name, self.core, self.extra = app, name, core, extra or []
        self.port = free_port()
        self.address = f"{HOST}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = LOG_DIR / f"overload-{name}-{self.port}.log"
        self.argv: list[str] = []

    def __enter__(self) -> Self:
        wrap: list[str] = []
        if self.core is not None and shutil.which("taskset"):
            wrap += ["taskset", "-c", str(self.core)]
        if shutil.which("setpriv"):
            wrap += ["setpriv", "--pdeathsig", "TERM"]
        self.argv = [*wrap, sys.executable, "-m", "blazerpc_core.cli", "serve", str(self.app.relative_to(ROOT)),
                     "--host", HOST, "--port", str(self.port), "--log-level", "WARNING", *self.extra]
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            self.wait_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The server's pid (taskset and setpriv exec it, so it is the child's)."""
        assert self.proc is not None
        return self.proc.pid

    def wait_serving(self, timeout: float = 60.0) -> None:
        """Poll the standard health service until it says SERVING."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(grpc.RpcError):
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} not SERVING after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the server drains), then SIGKILL to its process group if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything it left in its session

    def log_text(self) -> str:
        """The server's output so far."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's output, for error messages."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def sample(self) -> dict[str, float]:
        """RSS (MiB), open file descriptors and threads of the server now."""
        status = proc_status(self.pid)
        try:
            fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            fds = -1
        rss_kib = int(status.get("VmRSS", "0 kB").split()[0])
        return {"rss_mib": round(rss_kib / 1024, 2), "fds": fds, "threads": int(status.get("Threads", "0"))}


# --------------------------------------------------------------------------- rpcs


@dataclass
class Rpc:
    """One model's rpc: its path, message classes and shape, learnt from the server's reflection."""

    path: str
    request: Any
    response: Any
    streaming: bool

    def bind(self, channel: grpc.aio.Channel) -> Any:
        """A grpc.aio multicallable for this rpc on ``channel``."""
        make = channel.unary_stream if self.streaming else channel.unary_unary
        return make(self.path, request_serializer=self.request.SerializeToString,
                    response_deserializer=self.response.FromString)


def discover(address: str) -> dict[str, Rpc]:
    """Every inference rpc by name (``PredictAdd``...), through reflection: no generated code to keep in step."""
    from google.protobuf import message_factory
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(address) as channel:
        pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        service = pool.FindServiceByName(SERVICE)
        return {
            method.name: Rpc(f"/{SERVICE}/{method.name}", message_factory.GetMessageClass(method.input_type),
                             message_factory.GetMessageClass(method.output_type), method.server_streaming)
            for method in service.methods
        }


async def open_channels(address: str, clients: int, count: int | None = None) -> list[grpc.aio.Channel]:
    """``count`` connected channels, each its own TCP connection; by default one per 16 clients, at most 4."""
    count = count or max(1, min(MAX_CHANNELS, math.ceil(clients / CALLS_PER_CHANNEL)))
    channels = [grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) for _ in range(count)]
    await asyncio.gather(*(asyncio.wait_for(ch.channel_ready(), 10.0) for ch in channels))
    return channels


def status_name(exc: grpc.aio.AioRpcError) -> str:
    return str(exc.code().name)


def failed(exc: grpc.aio.AioRpcError) -> tuple[str, str | None]:
    """A failed call's status name and details."""
    return exc.code().name, exc.details()


def percentile_ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if values else None


# --------------------------------------------------------------------------- overload


@dataclass
class Marks:
    """Counters read at a window's edge: the app's run counts and the CPU time of each side."""

    at: float
    runs: int
    late: int
    late_ms: float
    server_cpu: float
    client_cpu: float
    machine: float


async def read_marks(stats: Any, request: Any, variant: str, pid: int) -> Marks:
    """The app's counters (an async model, answered from the loop even with the pool full) and CPU times."""
    reply = await stats(request, timeout=10.0)
    return Marks(time.monotonic(), getattr(reply, f"{variant}_runs"), getattr(reply, f"{variant}_late"),
                 getattr(reply, f"{variant}_late_ms"), cpu_seconds(pid), time.process_time(), machine_busy_seconds())


async def deadline_window(server: Server, rpcs: dict[str, Rpc], variant: str, *, clients: int, timeout: float,
                          warmup: float, seconds: float) -> dict[str, Any]:
    """``clients`` closed-loop callers of ``variant``, each call with ``timeout``; the window's figures.

    Only calls that end inside the window count; the app's counters are read at its edges.
    """
    rpc = rpcs[f"Predict{variant.capitalize()}"]
    channels = await open_channels(server.address, clients)
    stats_channel = grpc.aio.insecure_channel(server.address, options=CHANNEL_OPTIONS)
    try:
        calls = [rpc.bind(ch) for ch in channels]
        stats, stats_request = rpcs["PredictStats"].bind(stats_channel), rpcs["PredictStats"].request()
        await calls[0](rpc.request(deadline_at=0.0), timeout=10.0)  # connected, and the model answers
        start = time.monotonic() + warmup
        end = start + seconds
        statuses: Counter[str] = Counter()
        expired_at_client = 0
        latencies: list[float] = []

        async def client(call: Any) -> None:
            nonlocal expired_at_client
            while (sent := time.monotonic()) < end:
                local = False
                try:
                    await call(rpc.request(deadline_at=sent + timeout), timeout=timeout)
                    status = "OK"
                except grpc.aio.AioRpcError as exc:
                    status, local = status_name(exc), exc.details() == LOCAL_DEADLINE
                done = time.monotonic()
                if start <= done <= end:
                    statuses[status] += 1
                    expired_at_client += local
                    if status == "OK":
                        latencies.append(done - sent)
                if status != "OK":
                    await asyncio.sleep(ERROR_BACKOFF_S)

        async def edges() -> tuple[Marks, Marks]:
            await asyncio.sleep(start - time.monotonic())
            first = await read_marks(stats, stats_request, variant, server.pid)
            await asyncio.sleep(max(0.0, end - time.monotonic()))
            return first, await read_marks(stats, stats_request, variant, server.pid)

        marks = asyncio.create_task(edges())
        await asyncio.gather(*(client(calls[i % len(calls)]) for i in range(clients)))
        first, last = await marks
    finally:
        await asyncio.gather(*(ch.close() for ch in [*channels, stats_channel]))
    span = last.at - first.at
    runs, late = last.runs - first.runs, last.late - first.late
    deadline_exceeded = statuses.get("DEADLINE_EXCEEDED", 0)
    ok = statuses.get("OK", 0)
    server_cpu = (last.server_cpu - first.server_cpu) / span
    client_cpu = (last.client_cpu - first.client_cpu) / span
    return {
        "clients": clients, "timeout_ms": round(timeout * 1000, 1), "seconds": seconds,
        "calls": sum(statuses.values()), "ok": ok, "ok_per_s": round(ok / seconds, 1),
        "deadline_exceeded": deadline_exceeded,
        # the server answered DEADLINE_EXCEEDED itself (refused in time) / the client's own timer fired first
        "deadline_exceeded_by_server": deadline_exceeded - expired_at_client,
        "deadline_exceeded_at_client": expired_at_client,
        "other_statuses": {k: v for k, v in sorted(statuses.items()) if k not in ("OK", "DEADLINE_EXCEEDED")},
        "model_runs": runs, "model_runs_per_s": round(runs / span, 1), "late_runs": late,
        "wasted_share": round(late / runs, 4) if runs else None,
        "late_by_ms_mean": round((last.late_ms - first.late_ms) / late, 2) if late else None,
        "p50_ok_ms": percentile_ms(latencies, 50), "p99_ok_ms": percentile_ms(latencies, 99),
        "server_cpu": round(server_cpu, 2), "client_cpu": round(client_cpu, 2),
        "other_cpu": round(max(0.0, (last.machine - first.machine) / span - server_cpu - client_cpu), 2),
    }


def overload_phase(args: argparse.Namespace, server_core: int | None) -> dict[str, Any]:
    """Capacity then overload, each on a fresh server, per repeat and variant; goodput paired per repeat."""
    out: dict[str, Any] = {}
    for variant in args.variants:
        repeats = []
        for repeat in range(1, args.repeats + 1):
            row: dict[str, Any] = {"repeat": repeat}
            windows = (("capacity", args.capacity_timeout_ms / 1000), ("overload", args.deadline_ms / 1000))
            for window, timeout in windows:
                with Server(OVERLOAD_APP, f"{variant}-{window}", core=server_core, extra=args.server_args) as server:
                    rpcs = discover(server.address)
                    row[window] = asyncio.run(deadline_window(
                        server, rpcs, variant, clients=args.clients, timeout=timeout, warmup=args.warmup,
                        seconds=args.capacity_seconds if window == "capacity" else args.overload_seconds))
                w = row[window]
                others = f", {w['other_statuses']}" if w["other_statuses"] else ""
                log(f"  {variant} repeat {repeat} {window:8s} c={w['clients']} deadline {w['timeout_ms']:g} ms: "
                    f"{w['ok_per_s']:7.1f} OK/s; {w['calls']} calls: {w['ok']} OK, {w['deadline_exceeded']} "
                    f"DEADLINE_EXCEEDED ({w['deadline_exceeded_at_client']} at the client){others}; "
                    f"{w['model_runs']} runs, {w['late_runs']} late (mean {w['late_by_ms_mean']} ms); "
                    f"server_cpu {w['server_cpu']} other_cpu {w['other_cpu']}")
            capacity = row["capacity"]["ok_per_s"]
            row["goodput"] = round(row["overload"]["ok_per_s"] / capacity, 3) if capacity else None
            log(f"  {variant} repeat {repeat}: goodput {row['goodput']}")
            repeats.append(row)
        goodputs = [r["goodput"] for r in repeats if r["goodput"] is not None]
        wasted = [r["overload"]["wasted_share"] for r in repeats if r["overload"]["wasted_share"] is not None]
        out[variant] = {
            "goodput_median": round(statistics.median(goodputs), 3) if goodputs else None,
            "goodput_per_repeat": [r["goodput"] for r in repeats],
            "goodput_target": GOODPUT_TARGET,
            "meets_target": bool(goodputs) and statistics.median(goodputs) >= GOODPUT_TARGET,
            "capacity_ok_per_s_median": statistics.median(r["capacity"]["ok_per_s"] for r in repeats),
            "overload_ok_per_s_median": statistics.median(r["overload"]["ok_per_s"] for r in repeats),
            "wasted_share_median": round(statistics.median(wasted), 4) if wasted else None,
            "wasted_share_per_repeat": [r["overload"]["wasted_share"] for r in repeats],
            "noisy_windows": sum(r[w]["other_cpu"] >= NOISY_CORES for r in repeats for w in ("capacity", "overload")),
            "repeats": repeats,
        }
        log(f"{variant}: goodput median {out[variant]['goodput_median']} (target >= {GOODPUT_TARGET}), "
            f"wasted runs median {out[variant]['wasted_share_median']}")
    return out


# --------------------------------------------------------------------------- soak


W = weights()


Outcome = tuple[str, str | None]  # status name; what was wrong with an OK answer, or the error's details
CallKind = Callable[["SoakClient"], Awaitable[Outcome]]


@dataclass
class Kind:
    """One kind of soak call: how often, what it does, and the statuses it may rightly get."""

    name: str
    weight: int
    run: CallKind
    expected: frozenset[str]


@dataclass
class SoakClient:
    """What one closed-loop soak client calls with."""

    rpcs: dict[str, Rpc]
    channel: grpc.aio.Channel
    address: str
    rng: random.Random
    stubs: dict[str, Any] = field(default_factory=dict)

    def stub(self, name: str) -> Any:
        if name not in self.stubs:
            self.stubs[name] = self.rpcs[name].bind(self.channel)
        return self.stubs[name]

    def tensor(self, array: np.ndarray, *, dtype: str | None = None, shape: list[int] | None = None) -> Any:
        """A ``project`` request; ``dtype`` / ``shape`` override the array's (to send a bad one)."""
        request = self.rpcs["PredictProject"].request
        proto = type(request().x)(shape=list(array.shape) if shape is None else shape,
                                  dtype=dtype or array.dtype.name, data=array.tobytes())
        return request(x=proto)


async def unary(client: SoakClient, rpc: str, request: Any, timeout: float,
                check: Callable[[Any], str | None] | None = None) -> Outcome:
    """One unary call's status, and what was wrong with its answer if it was OK."""
    try:
        reply = await client.stub(rpc)(request, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        return failed(exc)
    return "OK", check(reply) if check else None


async def cancelled_after(call: Any, delay: float, reads: int = 0) -> Outcome:
    """Cancel ``call`` after ``delay`` s (and ``reads`` stream items); its status as the client sees it."""
    try:
        for _ in range(reads):
            await call.read()
        await asyncio.sleep(delay)
    except grpc.aio.AioRpcError as exc:
        return failed(exc)
    call.cancel()  # False when the call had already ended: its own status then
    return (await call.code()).name, await call.details()


async def k_add(c: SoakClient) -> Outcome:
    a, b = c.rng.random(), c.rng.random()
    return await unary(c, "PredictAdd", c.rpcs["PredictAdd"].request(a=a, b=b), 5.0,
                       lambda r: None if r.result == a + b else f"add({a}, {b}) = {r.result}")


async def k_project(c: SoakClient) -> Outcome:
    rows = c.rng.randint(1, 4)
    x = np.random.default_rng(c.rng.getrandbits(32)).standard_normal((rows, COLS)).astype(np.float32)
    want = x @ W

    def check(reply: Any) -> str | None:
        got = np.frombuffer(reply.result.data, dtype=np.float32).reshape(list(reply.result.shape))
        return None if got.shape == want.shape and np.allclose(got, want, rtol=1e-5, atol=1e-5) else "x @ W differs"

    return await unary(c, "PredictProject", c.tensor(x), 5.0, check)


async def k_project_bad(c: SoakClient) -> Outcome:
    """Client input the server must refuse: a wrong dtype, width or byte count."""
    x = np.ones((2, COLS), np.float32)
    bad = c.rng.choice([
        c.tensor(x.astype(np.float64)),
        c.tensor(np.ones((2, COLS - 1), np.float32)),
        c.tensor(x, shape=[3, COLS]),
        c.tensor(x, dtype="f4"),
    ])
    return await unary(c, "PredictProject", bad, 5.0)


async def k_tokens(c: SoakClient) -> Outcome:
    n = c.rng.randint(1, 50)
    items: list[str] = []
    try:
        async for reply in c.stub("PredictTokens")(c.rpcs["PredictTokens"].request(n=n, delay_ms=0.0), timeout=10.0):
            items.append(reply.result)
    except grpc.aio.AioRpcError as exc:
        return failed(exc)
    return "OK", None if items == [f"tok{i}" for i in range(n)] else f"{len(items)} items of {n}"


async def k_tokens_cancel(c: SoakClient) -> Outcome:
    call = c.stub("PredictTokens")(c.rpcs["PredictTokens"].request(n=1000, delay_ms=2.0), timeout=10.0)
    return await cancelled_after(call, 0.0, reads=3)


async def k_tokens_bad(c: SoakClient) -> Outcome:
    try:
        async for _ in c.stub("PredictTokens")(c.rpcs["PredictTokens"].request(n=-1, delay_ms=0.0), timeout=5.0):
            pass
    except grpc.aio.AioRpcError as exc:
        return failed(exc)
    return "OK", None


async def k_checked(c: SoakClient) -> Outcome:
    x = c.rng.uniform(0, 100)
    return await unary(c, "PredictChecked", c.rpcs["PredictChecked"].request(x=x), 5.0,
                       lambda r: None if math.isclose(r.result, math.sqrt(x)) else f"sqrt({x}) = {r.result}")


async def k_checked_bad(c: SoakClient) -> Outcome:
    return await unary(c, "PredictChecked", c.rpcs["PredictChecked"].request(x=-c.rng.uniform(1, 100)), 5.0)


async def k_checked_bug(c: SoakClient) -> Outcome:
    return await unary(c, "PredictChecked", c.rpcs["PredictChecked"].request(x=BUG_INPUT), 5.0)


async def k_slow_ok(c: SoakClient) -> Outcome:
    return await unary(c, "PredictSlow", c.rpcs["PredictSlow"].request(ms=5.0), 5.0)


async def k_slow_deadline(c: SoakClient) -> Outcome:
    """A 50 ms call with a 10 ms deadline: the caller is gone long before it could end."""
    return await unary(c, "PredictSlow", c.rpcs["PredictSlow"].request(ms=50.0), 0.010)


async def k_slow_cancel(c: SoakClient) -> Outcome:
    call = c.stub("PredictSlow")(c.rpcs["PredictSlow"].request(ms=50.0), timeout=5.0)
    return await cancelled_after(call, 0.010)


async def k_new_connection(c: SoakClient) -> Outcome:
    """A call on a connection of its own, closed after it: connection setup and teardown leak nothing."""
    async with grpc.aio.insecure_channel(c.address, options=CHANNEL_OPTIONS) as channel:
        reply = await c.rpcs["PredictAdd"].bind(channel)(c.rpcs["PredictAdd"].request(a=1.0, b=2.0), timeout=5.0)
    return "OK", None if reply.result == 3.0 else f"add(1, 2) = {reply.result}"


def _ok(*extra: str) -> frozenset[str]:
    return frozenset(("OK", *extra))


SOAK_KINDS = [
    Kind("add", 25, k_add, _ok()),
    Kind("project", 20, k_project, _ok()),
    Kind("project_bad_input", 3, k_project_bad, frozenset({"INVALID_ARGUMENT"})),
    Kind("tokens", 8, k_tokens, _ok()),
    Kind("tokens_cancelled", 3, k_tokens_cancel, frozenset({"CANCELLED"})),
    Kind("tokens_bad_input", 1, k_tokens_bad, frozenset({"INVALID_ARGUMENT"})),
    Kind("checked", 12, k_checked, _ok()),
    Kind("checked_bad_input", 4, k_checked_bad, frozenset({"INVALID_ARGUMENT"})),
    Kind("checked_model_bug", 2, k_checked_bug, frozenset({"INTERNAL"})),  # a model exception: INTERNAL by design
    Kind("slow", 5, k_slow_ok, _ok()),
    Kind("slow_deadline_10ms", 8, k_slow_deadline, frozenset({"DEADLINE_EXCEEDED"})),
    Kind("slow_cancelled", 5, k_slow_cancel, frozenset({"CANCELLED", "OK"})),  # OK: it ended before the cancel
    Kind("new_connection", 4, k_new_connection, _ok()),
]


@dataclass
class SoakRun:
    """What a soak observed, before it is summarised."""

    by_kind: dict[str, Counter[str]]
    unexpected: list[dict[str, Any]]
    aborted_by_client: Counter[int]
    connections: int
    samples: list[dict[str, float]]
    idle_before: dict[str, float]
    idle_after: dict[str, float]
    cpu: dict[str, float]


async def soak_load(server: Server, rpcs: dict[str, Rpc], args: argparse.Namespace) -> SoakRun:
    """Warm-up, then ``--soak-seconds`` of mixed load with the server sampled throughout, then idle."""
    idle_before = server.sample()
    channels = await open_channels(server.address, args.soak_clients, args.soak_connections)
    by_kind: dict[str, Counter[str]] = {name: Counter() for name in args.soak_kinds}
    unexpected: list[dict[str, Any]] = []
    aborted_by_client: Counter[int] = Counter()  # per shared connection: deadline timers fired and cancels
    samples: list[dict[str, float]] = []
    begin = time.monotonic()
    measure_from = begin + args.soak_warmup
    end = measure_from + args.soak_seconds
    kinds = {k.name: k for k in SOAK_KINDS if k.name in args.soak_kinds}
    names = list(kinds)
    shares = [k.weight for k in kinds.values()]

    async def client(index: int) -> None:
        c = SoakClient(rpcs, channels[index % len(channels)], server.address, random.Random(args.seed + index))
        while time.monotonic() < end:
            kind = kinds[c.rng.choices(names, shares)[0]]
            try:
                status, detail = await kind.run(c)
            except grpc.aio.AioRpcError as exc:  # a call that fails outside ``unary`` (new_connection)
                status, detail = failed(exc)
            except Exception as exc:  # counted, as unexpected, rather than ending the soak
                status, detail = f"EXCEPTION:{type(exc).__name__}", str(exc)[:200]
            if status == "OK" and detail:
                status = "WRONG_ANSWER"
            if time.monotonic() >= measure_from:
                by_kind[kind.name][status] += 1
                if status != "OK" and detail in (LOCAL_DEADLINE, LOCAL_CANCEL):
                    aborted_by_client[index % len(channels)] += 1
                if status not in kind.expected and len(unexpected) < 50:
                    unexpected.append({"kind": kind.name, "status": status, "detail": detail,
                                       "at_s": round(time.monotonic() - measure_from, 1)})
            if status not in ("OK", *kind.expected):
                await asyncio.sleep(ERROR_BACKOFF_S)

    async def sampler() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
        next_progress = measure_from + 30
        while (now := time.monotonic()) < end:
            samples.append({"t_s": round(now - measure_from, 1), **server.sample()})
            if now >= next_progress:
                calls = sum(sum(c.values()) for c in by_kind.values())
                log(f"  soak {now - measure_from:5.0f} s: {calls} calls, rss {samples[-1]['rss_mib']} MiB, "
                    f"fds {samples[-1]['fds']}, threads {samples[-1]['threads']}")
                next_progress += 30
            await asyncio.sleep(min(args.sample_every, max(0.0, end - time.monotonic())))
        samples.append({"t_s": round(time.monotonic() - measure_from, 1), **server.sample()})

    cpu0, machine0 = cpu_seconds(server.pid), machine_busy_seconds()
    try:
        watcher = asyncio.create_task(sampler())
        await asyncio.gather(*(client(i) for i in range(args.soak_clients)))
        await watcher
    finally:
        await asyncio.gather(*(ch.close() for ch in channels))
    span = time.monotonic() - begin
    server_cpu = (cpu_seconds(server.pid) - cpu0) / span
    machine_cpu = (machine_busy_seconds() - machine0) / span
    await asyncio.sleep(args.settle)  # every connection closed: what is left is what leaked
    return SoakRun(by_kind, unexpected, aborted_by_client, len(channels), samples, idle_before, server.sample(),
                   {"server_cpu": round(server_cpu, 2), "machine_cpu": round(machine_cpu, 2)})


def summarize_soak(args: argparse.Namespace, run: SoakRun) -> dict[str, Any]:
    """The soak's figures: statuses, unexpected ones, RSS, FD and thread trends."""
    by_kind, samples, idle_before, idle_after = run.by_kind, run.samples, run.idle_before, run.idle_after
    statuses: Counter[str] = Counter()
    for counts in by_kind.values():
        statuses.update(counts)
    kinds = {k.name: k for k in SOAK_KINDS}
    unexpected_counts = {
        name: {s: n for s, n in counts.items() if s not in kinds[name].expected}
        for name, counts in by_kind.items()
    }
    rss = [s["rss_mib"] for s in samples]
    times = [s["t_s"] for s in samples]
    half = len(samples) // 2
    # MiB per minute over the second half: a plateau is ~0, a leak is not
    slope = float(np.polyfit(times[half:], rss[half:], 1)[0]) * 60 if len(samples) - half >= 3 else None
    calls = sum(statuses.values())
    return {
        "clients": args.soak_clients, "seconds": args.soak_seconds, "warmup_s": args.soak_warmup,
        "calls": calls, "calls_per_s": round(calls / args.soak_seconds, 1),
        "statuses": dict(statuses.most_common()),
        "by_kind": {name: dict(counts.most_common()) for name, counts in by_kind.items()},
        "expected_by_kind": {k.name: sorted(k.expected) for k in SOAK_KINDS if k.name in by_kind},
        "unexpected_total": sum(sum(v.values()) for v in unexpected_counts.values()),
        "unexpected_by_kind": {k: v for k, v in unexpected_counts.items() if v},
        "unexpected_examples": run.unexpected[:20],
        "shared_connections": run.connections,
        # an upper bound of the resets each connection's rapid-reset budget (100/s by default) is charged
        "client_aborts_per_s_per_connection": [
            round(run.aborted_by_client[i] / args.soak_seconds, 1) for i in range(run.connections)
        ],
        "rss_mib": {
            "idle_before_load": idle_before["rss_mib"], "start": rss[0], "peak": max(rss), "end": rss[-1],
            "growth": round(rss[-1] - rss[0], 2),
            "growth_share": round((rss[-1] - rss[0]) / rss[0], 4) if rss[0] else None,
            "growth_second_half": round(rss[-1] - rss[half], 2),
            "second_half_slope_mib_per_min": round(slope, 3) if slope is not None else None,
            "idle_after_load": idle_after["rss_mib"],
        },
        "fds": {"idle_before_load": idle_before["fds"], "start": samples[0]["fds"], "end": samples[-1]["fds"],
                "max": max(s["fds"] for s in samples), "idle_after_load": idle_after["fds"]},
        "threads": {"idle_before_load": idle_before["threads"], "start": samples[0]["threads"],
                    "end": samples[-1]["threads"], "max": max(s["threads"] for s in samples),
                    "idle_after_load": idle_after["threads"]},
        "cpu": run.cpu,
        "samples": samples,
    }


def soak_phase(args: argparse.Namespace, server_core: int | None) -> dict[str, Any]:
    """One soak server, one soak run."""
    log(f"soak: {args.soak_clients} clients, {args.soak_warmup:g} s warm-up, {args.soak_seconds:g} s measured")
    with Server(SOAK_APP, "soak", core=server_core, extra=args.server_args) as server:
        rpcs = discover(server.address)
        result = summarize_soak(args, asyncio.run(soak_load(server, rpcs, args)))
        result["server_alive_at_end"] = server.proc is not None and server.proc.poll() is None
    # the server logs each connection it closed for resetting streams too fast
    result["connections_closed_for_resets"] = server.log_text().count("ENHANCE_YOUR_CALM")
    r, f = result["rss_mib"], result["fds"]
    log(f"soak: {result['calls']} calls ({result['calls_per_s']}/s), {result['unexpected_total']} unexpected, "
        f"{result['connections_closed_for_resets']} connections closed for resets; "
        f"rss {r['start']} -> peak {r['peak']} -> end {r['end']} MiB (growth {r['growth']}); "
        f"fds {f['idle_before_load']} idle, {f['start']} -> {f['end']} under load, {f['idle_after_load']} idle after")
    return result


# --------------------------------------------------------------------------- driver


def print_table(results: dict[str, Any]) -> None:
    """The short summary at the end of a run."""
    rows: list[tuple[str, str]] = []
    for variant, o in results.get("overload", {}).items():
        rows.append((f"{variant}: capacity OK/s (median)", f"{o['capacity_ok_per_s_median']:.1f}"))
        rows.append((f"{variant}: overload OK/s (median)", f"{o['overload_ok_per_s_median']:.1f}"))
        per = ", ".join(str(g) for g in o["goodput_per_repeat"])
        verdict = "PASS" if o["meets_target"] else "MISS"
        rows.append((f"{variant}: goodput (target >= {GOODPUT_TARGET})", f"{o['goodput_median']} [{per}] {verdict}"))
        per = ", ".join(str(w) for w in o["wasted_share_per_repeat"])
        rows.append((f"{variant}: runs finished after deadline", f"{o['wasted_share_median']} [{per}]"))
    if soak := results.get("soak"):
        r, f, t = soak["rss_mib"], soak["fds"], soak["threads"]
        rows += [
            ("soak: calls", f"{soak['calls']} ({soak['calls_per_s']}/s)"),
            ("soak: statuses", ", ".join(f"{k} {v}" for k, v in soak["statuses"].items())),
            ("soak: unexpected statuses", f"{soak['unexpected_total']} {soak['unexpected_by_kind'] or ''}".strip()),
            ("soak: connections closed for resets", f"{soak['connections_closed_for_resets']} (client aborts/s per "
                                                    f"connection: {soak['client_aborts_per_s_per_connection']})"),
            ("soak: RSS MiB start/peak/end", f"{r['start']} / {r['peak']} / {r['end']} (growth {r['growth']})"),
            ("soak: RSS slope, 2nd half", f"{r['second_half_slope_mib_per_min']} MiB/min"),
            ("soak: FDs idle/start/end/idle", f"{f['idle_before_load']} / {f['start']} / {f['end']} / "
                                               f"{f['idle_after_load']}"),
            ("soak: threads idle/start/end/idle", f"{t['idle_before_load']} / {t['start']} / {t['end']} / "
                                                   f"{t['idle_after_load']}"),
        ]
    width = max(len(k) for k, _ in rows) if rows else 0
    log("")
    for key, value in rows:
        log(f"{key:<{width}}  {value}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--phases", default="overload,soak", help="comma-separated: overload, soak")
    parser.add_argument("--variants", default="sleepy,spin", help="overload models: sleepy, spin")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=64, help="overload and capacity clients")
    parser.add_argument("--deadline-ms", type=float, default=50.0, help="every overload call's deadline")
    parser.add_argument("--capacity-timeout-ms", type=float, default=5000.0, help="every capacity call's deadline")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each window")
    parser.add_argument("--capacity-seconds", type=float, default=10.0)
    parser.add_argument("--overload-seconds", type=float, default=12.0)
    parser.add_argument("--soak-seconds", type=float, default=120.0)
    parser.add_argument("--soak-warmup", type=float, default=10.0)
    parser.add_argument("--soak-clients", type=int, default=32)
    parser.add_argument("--soak-connections", type=int, default=4,
                        help="soak: connections the clients share (each also gets a new one for some calls); "
                             "the clients' aborted calls per connection count against --max-resets-per-second")
    parser.add_argument("--soak-kinds", default=",".join(k.name for k in SOAK_KINDS),
                        help="soak: the kinds of call to mix (a subset isolates one path)")
    parser.add_argument("--sample-every", type=float, default=2.0, help="soak: seconds between RSS/FD samples")
    parser.add_argument("--settle", type=float, default=3.0, help="soak: idle seconds before the last sample")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server-args", default="", help="extra `blazerpc serve` options, one shell-quoted string")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client to cores 0 and 1")
    parser.add_argument("--lock-timeout", type=float, default=1800.0, help="seconds to wait for other benchmarks")
    parser.add_argument("-o", "--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.phases = [p for p in args.phases.split(",") if p]
    args.variants = [v for v in args.variants.split(",") if v]
    args.server_args = shlex.split(args.server_args)
    if unknown := set(args.phases) - {"overload", "soak"}:
        parser.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if unknown := set(args.variants) - {"sleepy", "spin"}:
        parser.error(f"unknown variant(s): {', '.join(sorted(unknown))}")
    args.soak_kinds = [k for k in args.soak_kinds.split(",") if k]
    if unknown := set(args.soak_kinds) - {k.name for k in SOAK_KINDS}:
        parser.error(f"unknown soak kind(s): {', '.join(sorted(unknown))}")
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so every server is stopped on the way out."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    pin = not args.no_pin and len(os.sched_getaffinity(0)) > 1 and shutil.which("taskset") is not None
    server_core = SERVER_CORE if pin else None
    if pin:
        os.sched_setaffinity(0, {CLIENT_CORE})  # before grpc starts its threads: they inherit it
    results: dict[str, Any] = {
        "command": shlex.join(sys.orig_argv if argv is None else [sys.executable, "-m", MODULE, *argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"nproc": os.cpu_count(), "load_average_start": load_average(), "python": sys.version.split()[0],
                    "grpcio": grpc.__version__},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "pinning": {"server_core": server_core, "client_core": CLIENT_CORE if pin else None},
    }
    started = time.monotonic()
    with bench_lock(timeout=args.lock_timeout) as locked:
        results["machine"]["bench_lock_held"] = locked
        results["machine"]["load_average_measuring"] = load_average()
        if "overload" in args.phases:
            log(f"overload: {args.clients} clients, {args.deadline_ms:g} ms deadlines vs capacity at "
                f"{args.capacity_timeout_ms:g} ms; {args.repeats} repeats of {', '.join(args.variants)}")
            results["overload"] = overload_phase(args, server_core)
        if "soak" in args.phases:
            results["soak"] = soak_phase(args, server_core)
    results["machine"]["load_average_end"] = load_average()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.output)
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
