"""The client's own cost per call: ``blazerpc_core.client`` against a bare grpclib stub call, same server, same run.

One ``blazerpc serve benchmarks/apps/bench_app.py`` subprocess (pinned to CPU 0 when the
machine has more than one) answers both. This process (pinned to the other CPUs) calls
``add`` and ``classify`` with a (1, 512) float32 tensor:

* ``raw``: ``grpclib.client.UnaryUnaryMethod`` — what a generated grpclib stub does — with
  the message classes in hand and the tensor converted by hand (``tobytes`` /
  ``frombuffer``), one reused channel;
* ``async``: ``AsyncClient.call(model, **inputs)``: name lookup, input checks, conversion
  both ways, retry bookkeeping, balancing;
* ``sync``: ``Client.call``, which adds the hop to the client's loop thread.

Sequentially (one call at a time) and at a small concurrency (8 calls in flight, the sync
client from 8 threads). Rounds rotate raw / async / sync and each case reports its
median, so drifting background load hits all alike. Reports wall µs per call and its ratio to
raw (the median of ratios paired within each round), and this process's CPU µs per call
and how much of it the client adds over raw: the client's own cost, which load from other
processes moves least. Writes ``results/client.json``.

    python -m benchmarks.bench_client            # about a minute
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from grpclib.client import Channel, UnaryUnaryMethod

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from blazerpc_core.client import AsyncClient, Client  # noqa: E402
from blazerpc_core.testing import free_port  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "client.json"
APP = "benchmarks/apps/bench_app.py"
CONCURRENCY = 8


def start_server(port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "blazerpc_core.cli", "serve", APP, "--port", str(port), "--log-level", "WARNING"]
    if (os.cpu_count() or 1) > 1 and shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLAZERPC_")}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(address: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            with Client(address, timeout=1.0) as client:
                if client.call("add", a=1.0, b=2.0) == 3.0:
                    return
        except Exception:
            time.sleep(0.2)
    raise SystemExit("the server was not ready in time")


class Cases:
    """The calls under test, each an async function of no arguments (or a sync one for ``sync``)."""

    def __init__(self, address: str, aclient: AsyncClient, client: Client) -> None:
        self.address = address
        self.aclient = aclient
        self.client = client
        self.x = np.ones((1, 512), np.float32)

    async def prepare(self) -> None:
        host, port = self.address.rsplit(":", 1)
        self.channel = Channel(host, int(port))
        add = await self.aclient.method("add")
        classify = await self.aclient.method("classify")
        self.add_request = add.request.cls
        self.raw_add = UnaryUnaryMethod(self.channel, add.path, add.request.cls, add.response.cls)
        self.tensor_request = classify.request.cls
        self.raw_classify = UnaryUnaryMethod(self.channel, classify.path, classify.request.cls, classify.response.cls)

    async def raw_add_call(self) -> float:
        reply = await self.raw_add(self.add_request(a=1.0, b=2.0), timeout=10.0)
        return float(reply.result)

    async def raw_tensor_call(self) -> Any:
        x = self.x
        request = self.tensor_request(x={"shape": x.shape, "dtype": x.dtype.name, "data": x.tobytes()})
        reply = await self.raw_classify(request, timeout=10.0)
        return np.frombuffer(reply.result.data, dtype=np.float32).reshape(list(reply.result.shape))

    async def async_add_call(self) -> float:
        return float(await self.aclient.call("add", a=1.0, b=2.0))

    async def async_tensor_call(self) -> Any:
        return await self.aclient.call("classify", x=self.x)

    def sync_add_call(self) -> float:
        return float(self.client.call("add", a=1.0, b=2.0))

    def sync_tensor_call(self) -> Any:
        return self.client.call("classify", x=self.x)


async def run_async(call: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) for ``calls`` calls, ``concurrency`` at a time."""
    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
    return time.perf_counter() - wall, time.process_time() - cpu


def run_sync(call: Callable[[], Any], calls: int, concurrency: int, pool: ThreadPoolExecutor) -> tuple[float, float]:
    def worker(count: int) -> None:
        for _ in range(count):
            call()

    wall, cpu = time.perf_counter(), time.process_time()
    list(pool.map(worker, [calls // concurrency] * concurrency))
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per case and round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON [results/client.json]")
    args = parser.parse_args()
    if (os.cpu_count() or 1) > 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    port = free_port()
    address = f"127.0.0.1:{port}"
    server = start_server(port)
    try:
        wait_ready(address, server)
        rows = measure(address, args.calls, args.rounds)
    finally:
        server.terminate()
        server.wait(30)
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join(["python -m benchmarks.bench_client", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "calls_per_round": args.calls, "rounds": args.rounds, "rows": rows,
    }, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


KINDS = ("raw", "async", "sync")


def measure(address: str, calls: int, rounds: int) -> list[dict[str, Any]]:
    """Rows per (payload, concurrency, client): medians over rounds, ratios paired within each round."""
    loop = asyncio.new_event_loop()
    aclient = AsyncClient(address, timeout=10.0)
    client = Client(address, timeout=10.0)
    cases = Cases(address, aclient, client)
    loop.run_until_complete(cases.prepare())
    pool = ThreadPoolExecutor(CONCURRENCY)
    samples: dict[tuple[str, int, str], list[tuple[float, float]]] = {}
    try:
        for payload in ("add", "tensor"):
            for concurrency in (1, CONCURRENCY):
                done = calls // concurrency * concurrency
                for round_ in range(rounds + 1):  # round 0 warms up and is not kept
                    order = KINDS[round_ % 3:] + KINDS[:round_ % 3]  # no kind always runs first
                    for kind in order:
                        call = getattr(cases, f"{kind}_{payload}_call")
                        if kind == "sync":
                            wall, cpu = run_sync(call, calls, concurrency, pool)
                        else:
                            wall, cpu = loop.run_until_complete(run_async(call, calls, concurrency))
                        if round_:
                            samples.setdefault((payload, concurrency, kind), []).append((wall / done, cpu / done))
    finally:
        pool.shutdown()
        client.close()
        loop.run_until_complete(aclient.close())
        cases.channel.close()
        loop.close()
    rows = []
    for (payload, concurrency, kind), values in samples.items():
        raw = samples[payload, concurrency, "raw"]
        wall = statistics.median(w for w, _ in values)
        cpu = statistics.median(c for _, c in values)
        raw_cpu = statistics.median(c for _, c in raw)
        rows.append({
            "payload": payload, "concurrency": concurrency, "client": kind,
            "us_per_call": round(wall * 1e6, 1),
            "ratio": round(statistics.median(w / r for (w, _), (r, _) in zip(values, raw, strict=True)), 2),
            "client_cpu_us_per_call": round(cpu * 1e6, 1),
            "extra_cpu_us_per_call": round((cpu - raw_cpu) * 1e6, 1),
        })
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'payload':<8}{'conc':>5}  {'client':<7}{'wall us/call':>13}{'ratio':>7}"
          f"{'client CPU us':>15}{'extra CPU us':>14}")
    for row in rows:
        print(f"{row['payload']:<8}{row['concurrency']:>5}  {row['client']:<7}{row['us_per_call']:>13.1f}"
              f"{row['ratio']:>7.2f}{row['client_cpu_us_per_call']:>15.1f}{row['extra_cpu_us_per_call']:>14.1f}")


if __name__ == "__main__":
    main()
