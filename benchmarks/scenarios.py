"""The network scenarios: blazerpc against a baseline server started in the same run.

1. ``add``: unary scalar add(a, b) at c=1/16/64 vs the raw grpclib server (target c=64 >= 0.85x).
2. ``tensor``: (1, 512) float32 → (1, 10) at c=1/16/64 vs the raw server (target c=64 >= 0.8x).
3. ``batch64``: batched ``slow`` at c=64, batching on vs off (target >= 8x, p99 bounded).
4. ``batch1``: the same model at c=1, on vs off (target: latency within 1.2x).
6. ``workers``: ``--workers 2`` vs ``--workers 1`` on scenario 1's c=64 load (no target).

Servers are pinned to CPU 0 and the load generator to CPU 1 (the harness's default),
except in ``workers`` where both server variants float over both cores with the client.
Within a scenario all servers start first and every measurement alternates between
them (A, B, A, B, ...), so drifting background load hits them alike.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from benchmarks.harness import (
    DEFAULT_SERVER_CPUS,
    RAW_SERVER_CMD,
    ServerProcess,
    bench_lock,
    client_cpus,
    running_server,
)
from benchmarks.loadgen import LoadConfig
from benchmarks.suite import (
    SERVER_ENV,
    Check,
    ScenarioResult,
    at_least,
    at_most,
    blazerpc_cmd,
    collapse_repeats,
    free_port,
    free_port_pair,
    info,
    measure_with_metrics,
    paired_ratio,
    pick,
)

BENCH_APP = "benchmarks/apps/bench_app.py"
UNBATCHED_APP = "benchmarks/apps/slow_unbatched_app.py"

# Targets from the issue.
ADD_TARGET = 0.85
TENSOR_TARGET = 0.8
BATCH_SPEEDUP_TARGET = 8.0
LATENCY_C1_TARGET = 1.2

# Batching knobs for scenarios 3-4, passed explicitly so the p99 bound below is exact.
MAX_BATCH = 32
BATCH_TIMEOUT_MS = 5.0


def slow_cost_ms(rows: int) -> float:
    """What ``slow`` sleeps for ``rows`` rows (benchmarks/apps/bench_app.py)."""
    return 2.0 + 0.02 * rows


#: Scenario 3's p99 bound: batch_timeout_ms + 3x the cost of one full batch.
P99_BOUND_MS = BATCH_TIMEOUT_MS + 3 * slow_cost_ms(MAX_BATCH)


@dataclass
class Timing:
    """How long and how often to measure (the suite's --quick changes these)."""

    duration: float = 5.0
    warmup: float = 1.0
    repeats: int = 3  # of the rows a target is judged on; the median-rps run is reported
    repeats_vs_raw: int = 5  # of the c=64 rows judged against raw (their targets sit close to the noise)


@dataclass
class ServerSpec:
    """A server under test, with what the harness and the metrics scrape need to know."""

    name: str
    cmd: str
    pin: bool = True
    metrics: int = 0  # metrics ports to scrape (1 per worker); 0 = none
    model: str | None = None  # model whose batch sizes to report
    env: dict[str, str] = field(default_factory=lambda: dict(SERVER_ENV))


def interleave(
    servers: Sequence[ServerSpec],
    configs: Sequence[LoadConfig],
    *,
    ready_timeout: float = 90.0,
    on_ready: Callable[[ServerProcess], None] | None = None,
) -> list[dict[str, Any]]:
    """Start every server, run each config on each server in turn, stop them all.

    Like harness.run_comparison, plus per-server pinning, extra environment and a
    /metrics scrape at the window edges (batch sizes, requests per worker). Configs
    may repeat; collapse_repeats() turns repeats into median rows afterwards.
    ``on_ready`` runs once per server before any load (e.g. to check an answer).
    """
    rows: list[dict[str, Any]] = []
    with bench_lock(), contextlib.ExitStack() as stack:
        started: list[tuple[ServerSpec, ServerProcess, list[int]]] = []
        for spec in servers:
            cmd, ports = spec.cmd, []
            if spec.metrics:
                base = free_port_pair() if spec.metrics > 1 else free_port()
                ports = [base + i for i in range(spec.metrics)]
                cmd = f"{cmd} --metrics-port {base}"
            server = stack.enter_context(
                running_server(cmd, name=spec.name, pin=spec.pin, env=spec.env, ready_timeout=ready_timeout)
            )
            print(
                f"# {spec.name}: {shlex.join(server.argv)} (ready in {server.ready_s:.2f}s, "
                f"idle RSS {server.idle_rss_mib:.0f} MiB)",
                flush=True,
            )
            if on_ready is not None:
                on_ready(server)
            started.append((spec, server, ports))
        spare = client_cpus(list(DEFAULT_SERVER_CPUS))
        for cfg in configs:
            for spec, server, ports in started:
                run_cfg = cfg
                if spec.pin and spare is not None and cfg.cpus is None:
                    run_cfg = replace(cfg, cpus=spare)
                row = measure_with_metrics(server, run_cfg, ports, model=spec.model)
                row["server_ready_s"] = round(server.ready_s, 3)
                row["server_idle_rss_mib"] = round(server.idle_rss_mib, 1)
                rows.append(row)
    return rows


def _load(t: Timing, method: str, concurrency: int, **kw: Any) -> LoadConfig:
    return LoadConfig(method=method, concurrency=concurrency, duration=t.duration, warmup=t.warmup, **kw)


# --------------------------------------------------------------------------- 1, 2


def unary_vs_raw(key: str, method: str, target: float, t: Timing) -> ScenarioResult:
    """blazerpc (bench_app) against raw grpclib at c=1/16/64; c=64 repeated for the verdict."""
    servers = [
        ServerSpec("raw", RAW_SERVER_CMD),
        ServerSpec("blazerpc", blazerpc_cmd(BENCH_APP)),
    ]
    configs = [_load(t, method, 1), _load(t, method, 16)] + [_load(t, method, 64)] * t.repeats_vs_raw
    rows = collapse_repeats(interleave(servers, configs))
    checks: list[Check] = []
    for c in (1, 16, 64):
        raw, ours = pick(rows, server="raw", concurrency=c), pick(rows, server="blazerpc", concurrency=c)
        note = (
            f"server us/op {ours['server_us_per_op']} vs raw {raw['server_us_per_op']} "
            f"(x{(ours['server_us_per_op'] or 0) / max(raw['server_us_per_op'] or 1, 1e-9):.2f}); "
            f"limit {ours['limit']} / raw {raw['limit']}"
        )
        if c == 64:
            paired, each = paired_ratio(ours, raw)
            note += f"; ratio = median of paired repeats {[round(x, 2) for x in each]}"
            checks.append(at_least(key, f"c={c} req/s vs raw", ours["rps"], raw["rps"], target, unit="req/s",
                                   note=note, paired=paired))
            checks.append(info(key, f"c={c} raw us/op / blazerpc us/op", raw["server_us_per_op"] or 0,
                               ours["server_us_per_op"], note="server CPU per call; >1 means blazerpc is cheaper"))
        else:
            checks.append(info(key, f"c={c} req/s vs raw", ours["rps"], raw["rps"], unit="req/s", note=note))
    title = {"add": "unary add(a, b) vs raw grpclib", "classify": "tensor (1,512)->(1,10) vs raw grpclib"}[method]
    return ScenarioResult(key, title, rows, checks, meta={"method": method, "timing": t.__dict__})


def scenario_add(t: Timing) -> ScenarioResult:
    """Scenario 1."""
    return unary_vs_raw("1-add", "add", ADD_TARGET, t)


def scenario_tensor(t: Timing) -> ScenarioResult:
    """Scenario 2."""
    return unary_vs_raw("2-tensor", "classify", TENSOR_TARGET, t)


# --------------------------------------------------------------------------- 3, 4

BATCH_FLAGS = ("--max-batch-size", str(MAX_BATCH), "--batch-timeout-ms", str(BATCH_TIMEOUT_MS))


def _batching_servers(with_serial: bool) -> list[ServerSpec]:
    servers = [
        ServerSpec("batch-on", blazerpc_cmd(BENCH_APP, *BATCH_FLAGS), metrics=1, model="slow"),
        ServerSpec("batch-off", blazerpc_cmd(UNBATCHED_APP, *BATCH_FLAGS), metrics=1, model="slow"),
    ]
    if with_serial:
        # One model thread: calls cannot overlap, as on a single accelerator. Context only.
        servers.append(
            ServerSpec("batch-off-1thread", blazerpc_cmd(UNBATCHED_APP, "--max-threads", "1"), metrics=1, model="slow")
        )
    return servers


def scenario_batch64(t: Timing) -> ScenarioResult:
    """Scenario 3: batching on vs off for ``slow`` at c=64."""
    rows = collapse_repeats(interleave(_batching_servers(True), [_load(t, "slow", 64)] * t.repeats))
    on, off = pick(rows, server="batch-on"), pick(rows, server="batch-off")
    serial = pick(rows, server="batch-off-1thread")
    per_batch = on.get("mean_rows_per_batch") or 0.0
    checks = [
        at_least("3-batch64", "batched req/s vs unbatched", on["rps"], off["rps"], BATCH_SPEEDUP_TARGET,
                 unit="req/s", paired=paired_ratio(on, off)[0],
                 note=f"{per_batch:.1f} rows/batch; server us/op on {on['server_us_per_op']} vs off "
                      f"{off['server_us_per_op']}, limit {on['limit']} / {off['limit']}; unbatched calls overlap "
                      "in the model thread pool"),
        at_most("3-batch64", "batched p99", on["p99_ms"], None, round(P99_BOUND_MS, 2), unit="ms",
                note=f"bound = {BATCH_TIMEOUT_MS:g} ms timeout + 3 x {slow_cost_ms(MAX_BATCH):.2f} ms (one "
                     f"{MAX_BATCH}-row batch); p50 {on['p50_ms']:.2f} ms, unbatched p99 {off['p99_ms']:.2f} ms; "
                     f"closed loop: mean latency = 64 / req/s = {64e3 / max(on['rps'], 1e-9):.1f} ms, and one core "
                     f"at {on['server_us_per_op']} us/call caps req/s at "
                     f"{1e6 / max(on['server_us_per_op'] or 1e-9, 1e-9):,.0f}"),
        info("3-batch64", "batched req/s vs unbatched with 1 model thread", on["rps"], serial["rps"], unit="req/s",
             paired=paired_ratio(on, serial)[0],
             note="the unbatched model serialised, as one accelerator would be"),
    ]
    meta = {"max_batch_size": MAX_BATCH, "batch_timeout_ms": BATCH_TIMEOUT_MS, "p99_bound_ms": P99_BOUND_MS,
            "timing": t.__dict__}
    return ScenarioResult("3-batch64", "batched slow model at c=64: batching on vs off", rows, checks, meta,
                          columns=BATCH_COLUMNS)


def scenario_batch1(t: Timing) -> ScenarioResult:
    """Scenario 4: batching on vs off for ``slow`` at c=1 (a lone request must not wait)."""
    rows = collapse_repeats(interleave(_batching_servers(False), [_load(t, "slow", 1)] * t.repeats))
    on, off = pick(rows, server="batch-on"), pick(rows, server="batch-off")
    checks = [
        at_most("4-batch1", "batched p50 vs unbatched", on["p50_ms"], off["p50_ms"], LATENCY_C1_TARGET, unit="ms",
                paired=paired_ratio(on, off, "p50_ms")[0],
                note=f"p99 {on['p99_ms']:.2f} vs {off['p99_ms']:.2f} ms; model sleeps {slow_cost_ms(1):.2f} ms"),
        info("4-batch1", "batched p99 vs unbatched", on["p99_ms"], off["p99_ms"], unit="ms",
             paired=paired_ratio(on, off, "p99_ms")[0]),
    ]
    return ScenarioResult("4-batch1", "batched slow model at c=1: batching on vs off", rows, checks,
                          {"timing": t.__dict__}, columns=BATCH_COLUMNS)


BATCH_COLUMNS = (
    "server", "scenario", "concurrency", "rps", "p50_ms", "p90_ms", "p99_ms", "errors", "mean_rows_per_batch",
    "server_cpu", "client_cpu", "other_cpu", "limit", "server_us_per_op",
)


# --------------------------------------------------------------------------- 6

WORKER_CHANNELS = 8  # TCP connections from the client, so SO_REUSEPORT can spread them over workers


def scenario_workers(t: Timing) -> ScenarioResult:
    """Scenario 6: ``--workers 2`` vs ``--workers 1`` on add at c=64, servers not pinned.

    Neither server is pinned, and the load generator shares the same two cores, so
    this measures the whole machine; the client's CPU is in every row.
    """
    servers = [
        ServerSpec("workers-1", blazerpc_cmd(BENCH_APP, "--workers", "1"), pin=False, metrics=1),
        ServerSpec("workers-2", blazerpc_cmd(BENCH_APP, "--workers", "2"), pin=False, metrics=2),
    ]
    cfg = _load(t, "add", 64, channels=WORKER_CHANNELS)
    rows = collapse_repeats(interleave(servers, [cfg] * t.repeats))
    one, two = pick(rows, server="workers-1"), pick(rows, server="workers-2")
    split = "/".join(f"{v:.0f}" for v in (two.get("requests_by_port") or {}).values())
    checks = [
        info("6-workers", "--workers 2 req/s vs --workers 1", two["rps"], one["rps"], unit="req/s",
             paired=paired_ratio(two, one)[0],
             note=f"unpinned; client shares the 2 cores (client_cpu {two['client_cpu']:.2f} vs "
                  f"{one['client_cpu']:.2f}); server_cpu {two['server_cpu']:.2f} vs {one['server_cpu']:.2f}; "
                  f"calls per worker {split}"),
    ]
    return ScenarioResult("6-workers", "--workers 2 vs --workers 1 (add, c=64, unpinned)", rows, checks,
                          {"channels": WORKER_CHANNELS, "timing": t.__dict__})
