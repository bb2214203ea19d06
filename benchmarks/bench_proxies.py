"""Replicas behind the shipped proxies: throughput, and calls lost when replicas stop.

    python -m benchmarks.bench_proxies            # about 5 min; writes results/proxies.json
    python -m benchmarks.bench_proxies --quick    # shorter windows, one repeat, fewer scenarios

Two parts, each measured in one run:

* **Throughput.** ``add`` at c=64 (the loadgen, closed loop) through Envoy (the shipped
  ``deploy/envoy/envoy.yaml``, one worker thread) in front of 2 replicas, against 1
  replica called directly, alternating A, B, A, B. Nothing is pinned: on a 2-core machine
  the replicas, Envoy and the load generator share both cores, so this measures what
  the proxy costs, not what a second machine would add. CPU per call is recorded for
  each process group.
* **Stopping replicas under load.** Open-loop calls at a fixed rate (the deploy tests'
  app: ``echo``, sleeping 20 ms so calls overlap every stop), counting every call that
  failed, for: the issue's scenario (2 replicas, 2,000 calls at 200/s, one replica sent
  SIGTERM) with and without ``--drain-delay``; a rolling restart of 3 replicas; a replica
  killed (SIGKILL). Through Envoy with the shipped retry policy, Envoy without it, and
  nginx (the shipped ``deploy/nginx/blazerpc.conf``) when the machine has it. The
  client retries nothing, so every failure the proxy lets through is counted.

The proxies, replicas and load are those of ``tests/deploy/cluster.py``, so the figures
here are the scenarios the deploy tests assert.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from benchmarks.harness import RESULTS_DIR, bench_lock, cpu_seconds, machine_busy_seconds, system_info
from benchmarks.loadgen import LoadConfig, run_load
from blazerpc_core.testing import cli_stubs
from tests.deploy.cluster import (
    APP,
    DRAIN_DELAY,
    GRACE_PERIOD,
    Envoy,
    Load,
    Nginx,
    Proxy,
    Replica,
    nginx_binary,
    replicas,
    rolling_restart_under_load,
    wait_all_routed,
)

ROOT = Path(__file__).resolve().parents[1]
BENCH_APP = str(ROOT / "benchmarks" / "apps" / "bench_app.py")
_TICK = os.sysconf("SC_CLK_TCK")


def _measure(target: str, cfg: LoadConfig, groups: dict[str, list[int]]) -> dict[str, Any]:
    """One closed-loop window against ``target``; CPU per call of each process group in it."""
    cpu: dict[str, float] = {}

    def on_window(edge: str) -> None:
        samples = {name: sum(cpu_seconds(p) for p in pids) for name, pids in groups.items()}
        samples["machine"] = machine_busy_seconds()
        for name, used in samples.items():
            cpu[name] = used - cpu.get(name, 0.0) if edge == "end" else used

    result = run_load(dataclasses.replace(cfg, target=target), on_window=on_window)
    calls = max(result.requests, 1)
    client = sum(result.client_cpu) * result.duration_s
    machine = cpu.pop("machine")
    other = max(0.0, machine - sum(cpu.values()) - client) / result.duration_s
    return {
        "rps": round(result.rps, 1), "p50_ms": round(result.p50_ms, 2), "p99_ms": round(result.p99_ms, 2),
        "errors": result.errors,
        "cpu_cores": {k: round(v / result.duration_s, 2) for k, v in cpu.items()},
        "cpu_us_per_call": {k: round(v / calls * 1e6, 1) for k, v in cpu.items()},
        "client_cpu_cores": round(sum(result.client_cpu), 2),
        "other_cpu_cores": round(other, 2),  # everything else on the machine: > 0.2 means noisy
    }


def _median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(rows, key=lambda r: r["rps"])[len(rows) // 2]


def throughput(work: Path, *, duration: float, repeats: int) -> dict[str, Any]:
    cfg = LoadConfig(method="add", concurrency=64, duration=duration, warmup=1.0, processes=1)
    with replicas(1, app=BENCH_APP) as (direct,), replicas(2, app=BENCH_APP) as pair, \
            Envoy(work, pair) as envoy:
        assert direct.process is not None and envoy.process is not None
        groups_direct = {"replica": [direct.process.process.pid]}
        groups_envoy = {"replicas": [r.process.process.pid for r in pair if r.process is not None],
                        "envoy": [envoy.process.pid]}
        time.sleep(1.5)  # Envoy's workers route to both replicas one health-check interval after admin says so
        runs: dict[str, list[dict[str, Any]]] = {"direct_1_replica": [], "envoy_2_replicas": []}
        for _ in range(repeats):
            runs["direct_1_replica"].append(_measure(direct.process.address, cfg, groups_direct))
            runs["envoy_2_replicas"].append(_measure(envoy.address, cfg, groups_envoy))
            print(f"  direct {runs['direct_1_replica'][-1]['rps']:,.0f} req/s, "
                  f"envoy {runs['envoy_2_replicas'][-1]['rps']:,.0f} req/s", flush=True)
        per_replica = [int(line.rsplit("::", 1)[1]) for line in envoy.admin("/clusters").splitlines()
                       if line.startswith("blazerpc::") and "::rq_total::" in line]
    direct_row, envoy_row = _median(runs["direct_1_replica"]), _median(runs["envoy_2_replicas"])
    ratios = sorted(e["rps"] / d["rps"] for d, e in zip(runs["direct_1_replica"], runs["envoy_2_replicas"],
                                                         strict=True))
    return {
        "config": {"method": "add", "concurrency": 64, "duration_s": duration, "repeats": repeats,
                   "envoy_concurrency": 1, "pinned": False},
        "direct_1_replica": direct_row, "envoy_2_replicas": envoy_row,
        "ratio_envoy_over_direct": round(ratios[len(ratios) // 2], 3),
        "calls_per_replica_through_envoy": per_replica,
        "repeats": runs,
    }


ProxyFactory = Callable[[Path, list[Replica]], Proxy]


def _proxies() -> dict[str, ProxyFactory]:
    found: dict[str, ProxyFactory] = {
        "envoy": lambda work, group: Envoy(work, group),
        "envoy-no-retries": lambda work, group: Envoy(work, group, retries=False),
    }
    if nginx_binary() is not None:
        found["nginx"] = lambda work, group: Nginx(work, group)
    return found


@contextmanager
def _cluster(work: Path, proxy: ProxyFactory, count: int, *args: str) -> Iterator[tuple[list[Replica], Proxy]]:
    with ExitStack() as stack:
        group = stack.enter_context(replicas(count, *args))
        front = stack.enter_context(proxy(work, group))
        yield group, front


def _result(name: str, proxy: str, report: Any, **extra: Any) -> dict[str, Any]:
    failed = report.failed
    row = {"scenario": name, "proxy": proxy, "calls": len(report.outcomes), "failed": len(failed),
           "failed_by_code": {c: sum(o.code == c for o in failed) for c in sorted({o.code for o in failed})},
           **extra}
    print(f"  {name:<28} {proxy:<17} {row['failed']:>4} failed of {row['calls']}", flush=True)
    return row


def one_stops(work: Path, proxy: str, factory: ProxyFactory, stubs: Any, drain: float) -> dict[str, Any]:
    """The issue's scenario: 2 replicas, 2,000 calls at 200/s, SIGTERM to one after 3 s."""
    with _cluster(work, factory, 2, "--drain-delay", str(drain)) as (group, front):
        wait_all_routed(front.address, stubs, group)
        with Load(front.address, stubs, rate=200, count=2000, sleep_ms=20) as load:
            time.sleep(3)
            group[0].signal(signal.SIGTERM)
            code = group[0].wait(drain + GRACE_PERIOD + 20)
            report = load.join()
    return _result(f"one of 2 stops, drain {drain:g}s", proxy, report, drain_delay_s=drain, exit_code=code)


def rolling(work: Path, proxy: str, factory: ProxyFactory, stubs: Any) -> dict[str, Any]:
    """3 replicas restarted one after the other (each back in rotation before the next) under 100 calls/s."""
    with _cluster(work, factory, 3) as (group, front):
        wait_all_routed(front.address, stubs, group)
        started = time.monotonic()
        codes, report = rolling_restart_under_load(front.address, stubs, group, front, count=100 * 120, sleep_ms=20)
    return _result("rolling restart of 3", proxy, report, drain_delay_s=DRAIN_DELAY, exit_codes=codes,
                   seconds=round(time.monotonic() - started, 1))


def killed(work: Path, proxy: str, factory: ProxyFactory, stubs: Any) -> dict[str, Any]:
    """3 replicas, 200 calls/s of 100 ms, one replica SIGKILLed after 1.5 s (about 7 calls running on it)."""
    with _cluster(work, factory, 3) as (group, front):
        wait_all_routed(front.address, stubs, group)
        with Load(front.address, stubs, rate=200, count=800, sleep_ms=100) as load:
            time.sleep(1.5)
            group[0].signal(signal.SIGKILL)
            group[0].wait(10)
            report = load.join()
        retried = front.stats().get("cluster.blazerpc.upstream_rq_retry_success") if isinstance(front, Envoy) else None
    return _result("one of 3 killed (SIGKILL)", proxy, report, retried_ok=retried)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s windows, one repeat, no drain-0 runs")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "proxies.json")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with bench_lock(), tempfile.TemporaryDirectory(prefix="bench-proxies-") as tmp:
        work = Path(tmp)
        stubs = cli_stubs([APP], work / "stubs")
        print("throughput: add, c=64, Envoy + 2 replicas vs 1 replica direct", flush=True)
        result = throughput(work, duration=2.0 if args.quick else 5.0, repeats=1 if args.quick else 3)
        scenarios = []
        print("stopping replicas under load", flush=True)
        for name, factory in _proxies().items():
            for drain in ((DRAIN_DELAY,) if args.quick else (0.0, DRAIN_DELAY)):
                scenarios.append(one_stops(work, name, factory, stubs, drain))
            scenarios.append(rolling(work, name, factory, stubs))
            if name != "envoy-no-retries":
                scenarios.append(killed(work, name, factory, stubs))
    doc = {
        "name": "proxies", "system": system_info(),
        "meta": {"command": "python -m benchmarks.bench_proxies" + (" --quick" if args.quick else ""),
                 "seconds": round(time.monotonic() - started, 1), "drain_delay_s": DRAIN_DELAY,
                 "grace_period_s": GRACE_PERIOD},
        "throughput": result, "scenarios": scenarios,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    direct, envoy = result["direct_1_replica"], result["envoy_2_replicas"]
    print(f"\nthroughput: 1 replica direct {direct['rps']:,.0f} req/s (p99 {direct['p99_ms']} ms); "
          f"Envoy + 2 replicas {envoy['rps']:,.0f} req/s (p99 {envoy['p99_ms']} ms); "
          f"ratio {result['ratio_envoy_over_direct']}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
