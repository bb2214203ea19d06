"""A/B: two or more servers under the same load, in alternating windows, in one run.

The suite compares blazerpc with baselines; this compares *versions* (a change against the
code before it, from another checkout) or configurations, which is how each change's
figures in ``benchmarks/README.md`` were measured. Every server is pinned to CPU 0 and the
grpc.aio load to CPU 1; the windows alternate (A B, then B A), so a machine that drifts
during the run moves every server alike. Reported per server: req/s, p50 and p99/p50 per
window, their medians, and the median server CPU per request.

    python -m benchmarks.ab classify 64 6 \\
        "new=python -m blazerpc_core.cli serve benchmarks/apps/bench_app.py --port PORT --log-level WARNING" \\
        "old@../base=python -m blazerpc_core.cli serve benchmarks/apps/bench_app.py --port PORT --log-level WARNING"

``NAME@DIR`` runs that server's command in DIR (a checkout of the other version);
``PORT`` is replaced by a free port.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import cpu_seconds, free_port
from benchmarks.loadgen import LoadConfig, run_load

WINDOW = 4.0  # measured seconds per window
WARMUP = 1.0  # unmeasured seconds before each window
STARTUP = 4.0  # seconds every server gets to start and load before the first window


@dataclass
class Server:
    """One side of the comparison: its process and what each window measured."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    tail: list[float] = field(default_factory=list)  # p99 / p50
    cpu_us: list[float] = field(default_factory=list)


def start(spec: str) -> Server:
    """``NAME[@DIR]=COMMAND`` → a server process pinned to CPU 0."""
    name, _, command = spec.partition("=")
    name, _, directory = name.partition("@")
    port = free_port()
    argv = ["taskset", "-c", "0", *shlex.split(command.replace("PORT", str(port)))]
    process = subprocess.Popen(argv, cwd=directory or None, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Server(name, process, port)


def measure(server: Server, method: str, concurrency: int) -> None:
    """One window of load against ``server``, recorded on it."""
    config = LoadConfig(target=f"127.0.0.1:{server.port}", method=method, concurrency=concurrency,
                        duration=WINDOW, warmup=WARMUP, cpus=[1])
    before = cpu_seconds(server.process.pid)
    result = run_load(config)
    used = cpu_seconds(server.process.pid) - before
    calls = max(1.0, result.requests * (WINDOW + WARMUP) / WINDOW)  # the warm-up's calls used CPU too
    server.rps.append(result.requests / WINDOW)
    server.p50_ms.append(result.p50_ms)
    server.tail.append(result.p99_ms / result.p50_ms if result.p50_ms else 0.0)
    server.cpu_us.append(used / calls * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("method", help="a loadgen method: add, classify, slow, tokens, oip-classify, ...")
    parser.add_argument("concurrency", type=int)
    parser.add_argument("repeats", type=int, help="windows per server")
    parser.add_argument("servers", nargs="+", help="NAME[@DIR]=COMMAND with PORT in it")
    args = parser.parse_args()
    servers = [start(spec) for spec in args.servers]
    try:
        time.sleep(STARTUP)
        for repeat in range(args.repeats):
            for server in servers if repeat % 2 == 0 else servers[::-1]:
                measure(server, args.method, args.concurrency)
        for server in servers:
            windows = (f"req/s {[round(x) for x in server.rps]} p50 ms {[round(x, 3) for x in server.p50_ms]} "
                       f"p99/p50 {[round(x, 2) for x in server.tail]}")
            medians = (f"median req/s {statistics.median(server.rps):.0f}, "
                       f"p50 {statistics.median(server.p50_ms):.3f} ms, p99/p50 {statistics.median(server.tail):.2f}, "
                       f"server CPU {statistics.median(server.cpu_us):.0f} us/request")
            print(f"{server.name}: {windows}; {medians}")
    finally:
        for server in servers:
            server.process.terminate()
            server.process.wait(10)


if __name__ == "__main__":
    if not Path("benchmarks").is_dir():
        raise SystemExit("run from the repository root: python -m benchmarks.ab ...")
    main()
