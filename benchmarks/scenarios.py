"""The network scenarios: blazerpc against its baselines, every server started in the same run.

* ``matmul``: the issue's main table. One (1, 512) float32 row per request, ``x @ W`` → 10
  float32, at c = 1, 4, 16, 64: raw grpclib, blazerpc batched (max 32), blazerpc unbatched.
* ``defaults``: the same model with the command line's defaults (``--log-level INFO``: an
  access-log line per call), at c = 1 and 64, beside raw and the tuned batched server.
* ``add``: scalar ``add(a, b)`` at c=64 vs raw, tuned and with the defaults.
* ``accelerator``: 2 ms per call whatever the batch, calls cannot overlap; batched vs
  unbatched at c=64 (batch sizes from ``/metrics``).
* ``footprint``: idle RSS and time to ready, raw and blazerpc, alternately started.

Servers are pinned to CPU 0 and the load generator to CPU 1 (the harness's default).
Within a scenario all servers start first and every measurement alternates between
them (A, B, C, then B, C, A on the next repeat, ...), so drifting background load hits
them alike; a verdict is the median of per-repeat ratios (see suite.paired_ratio).
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from benchmarks.harness import (
    DEFAULT_SERVER_CPUS,
    RAW_SERVER_CMD,
    ServerProcess,
    ServerStartError,
    bench_lock,
    client_cpus,
    free_port,
    machine_busy_seconds,
    running_server,
)
from benchmarks.loadgen import LoadConfig, LoadgenError
from benchmarks.suite import (
    SERVER_ENV,
    Check,
    ScenarioResult,
    at_least,
    at_most,
    blazerpc_cmd,
    collapse_repeats,
    info,
    measure_with_metrics,
    median,
    paired_ratio,
    per_repeat,
    pick,
    throughput_check,
)

BENCH_APP = "benchmarks/apps/bench_app.py"
UNBATCHED_APP = "benchmarks/apps/unbatched_app.py"

# Targets (issue 16), each a ratio measured in one run.
BATCHED_VS_RAW = 0.95  # c=64
UNBATCHED_VS_RAW = 0.9  # c=64
ADD_VS_RAW = 0.95  # c=64
BATCHED_VS_UNBATCHED = 1.0  # at every concurrency
TAIL_P99_OVER_P50 = 1.6  # c=64, batched
C1_P50_VS_RAW = 1.1  # batched
ACCELERATOR_GAIN = 6.0  # batched over unbatched, c=64
IDLE_RSS_MIB = 60.0
READY_S = 0.5

CONCURRENCY = (1, 4, 16, 64)


@dataclass
class Timing:
    """How long and how often to measure (the suite's --quick changes these)."""

    duration: float = 5.0
    warmup: float = 1.0
    repeats: int = 3  # every judged row is measured this often, servers alternating


@dataclass
class ServerSpec:
    """A server under test, with what the harness and the metrics scrape need to know.

    ``protocol="oip"`` sends the same rows through the Open Inference Protocol
    (``ModelInfer``) instead of the bench contract's rpc; ``shares`` names an earlier
    spec whose process this one measures (one server, two protocols).
    """

    name: str
    cmd: str
    pin: bool = True
    metrics: int = 0  # metrics ports to scrape (1 per worker); 0 = none
    model: str | None = None  # model whose batch sizes to report
    env: dict[str, str] = field(default_factory=lambda: dict(SERVER_ENV))
    probe: str = "add"
    protocol: str = "native"
    shares: str | None = None
    ready_timeout: float = 90.0
    #: A server that may fail to start (a peer): it is left out, and why is kept, instead of failing the scenario.
    optional: bool = False


def _method(spec: ServerSpec, cfg: LoadConfig) -> LoadConfig:
    if spec.protocol == "oip" and not cfg.method.startswith("oip-"):
        return replace(cfg, method=f"oip-{cfg.method}")
    return cfg


def interleave(
    servers: Sequence[ServerSpec],
    configs: Sequence[LoadConfig],
    *,
    on_ready: Callable[[ServerProcess], None] | None = None,
    label: str = "",
    failures: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Start every server, run each config on each server in turn, stop them all.

    Like harness.run_comparison, plus per-server pinning, protocol, extra environment and
    a /metrics scrape at the window edges (batch sizes). Configs may repeat; the k-th
    occurrence of a config rotates the server order by k, so no server always runs first.
    collapse_repeats() turns repeats into median rows afterwards. ``on_ready`` runs once
    per started process before any load (e.g. to check an answer). An ``optional`` server
    that cannot start is left out; ``failures`` gets its name and why.
    """
    rows: list[dict[str, Any]] = []
    with bench_lock(), contextlib.ExitStack() as stack:
        started: list[tuple[ServerSpec, ServerProcess, list[int]]] = []
        by_name: dict[str, tuple[ServerProcess, list[int]]] = {}
        for spec in servers:
            if spec.shares is not None:
                if spec.shares in by_name:
                    server, ports = by_name[spec.shares]
                    started.append((spec, server, ports))
                continue
            cmd, ports = spec.cmd, []
            if spec.metrics:
                ports = [free_port()]
                cmd = f"{cmd} --metrics-port {ports[0]}"
            try:
                server = stack.enter_context(running_server(
                    cmd, name=spec.name, pin=spec.pin, env=spec.env, ready_timeout=spec.ready_timeout,
                    probe=spec.probe,  # type: ignore[arg-type]
                ))
            except (ServerStartError, OSError) as exc:
                if not spec.optional:
                    raise
                print(f"  # {spec.name} did not start, left out: {exc}", flush=True)
                if failures is not None:
                    failures[spec.name] = str(exc)
                continue
            print(f"  # {spec.name}: {shlex.join(server.argv)} (ready in {server.ready_s:.2f}s, "
                  f"idle RSS {server.idle_rss_mib:.0f} MiB)", flush=True)
            if on_ready is not None:
                on_ready(server)
            started.append((spec, server, ports))
            by_name[spec.name] = (server, ports)
        spare = client_cpus(list(DEFAULT_SERVER_CPUS))
        seen: dict[str, int] = {}
        total = len(configs) * len(started)
        done = 0
        for cfg in configs:
            key = repr(cfg)
            turn = seen.get(key, 0)
            seen[key] = turn + 1
            order = started[turn % len(started):] + started[: turn % len(started)]
            for spec, server, ports in order:
                run_cfg = _method(spec, cfg)
                if spec.pin and spare is not None and cfg.cpus is None:
                    run_cfg = replace(run_cfg, cpus=spare)
                done += 1
                try:
                    row = measure_with_metrics(server, run_cfg, ports, model=spec.model, verbose=False)
                except LoadgenError as exc:  # e.g. the server stopped answering: a failed window, not a lost run
                    row = failed_window(spec.name, run_cfg, exc)
                row["server"] = spec.name
                row["server_ready_s"] = round(server.ready_s, 3)
                row["server_idle_rss_mib"] = round(server.idle_rss_mib, 1)
                rows.append(row)
                if row["limit"] == "failed":
                    continue
                extra = f" rows/batch={row['mean_rows_per_batch']:.1f}" if "mean_rows_per_batch" in row else ""
                print(f"  [{label} {done}/{total}] {spec.name:<20} {run_cfg.scenario():<12} c={cfg.concurrency:<3} "
                      f"{row['rps']:>7.0f} req/s p50={row['p50_ms']:.2f} p99={row['p99_ms']:.2f} ms "
                      f"srv={row['server_us_per_op']} us/op other_cpu={row['other_cpu']:.2f} "
                      f"limit={row['limit']}{extra}" + (f" ERRORS={row['errors']}" if row["errors"] else ""),
                      flush=True)
    return rows


def failed_window(server: str, cfg: LoadConfig, exc: Exception) -> dict[str, Any]:
    """The row of a window the load generator could not run (counted as one error, 0 req/s)."""
    print(f"  !! {server} {cfg.scenario()} c={cfg.concurrency}: the window failed: {str(exc)[-300:]}", flush=True)
    return {"server": server, "scenario": cfg.scenario(), "rows": None, "tokens": None,
            "concurrency": cfg.concurrency, "processes": cfg.processes, "rps": 0.0, "p50_ms": 0.0, "p90_ms": 0.0,
            "p99_ms": 0.0, "errors": 1, "server_cpu": 0.0, "client_cpu": 0.0, "other_cpu": 0.0, "limit": "failed",
            "server_us_per_op": None, "items_per_s": 0.0, "ttfi_p50_ms": 0.0, "error": str(exc)[-3000:],
            "result": {"config": asdict(cfg)}}


def load(t: Timing, method: str, concurrency: int, **kw: Any) -> LoadConfig:
    """One window of ``method`` at ``concurrency``."""
    return LoadConfig(method=method, concurrency=concurrency, duration=t.duration, warmup=t.warmup, **kw)


def repeated(t: Timing, configs: Sequence[LoadConfig]) -> list[LoadConfig]:
    """The configs, then again, ``t.repeats`` times (each repeat sweeps every config)."""
    return [cfg for _ in range(t.repeats) for cfg in configs]


def _us(row: dict[str, Any]) -> str:
    return f"{row.get('server_us_per_op')} us/op"


# --------------------------------------------------------------------------- the main table


def table_checks(key: str, rows: list[dict[str, Any]], batched: str, unbatched: str, raw: str = "raw",
                 concurrency: Sequence[int] = CONCURRENCY) -> list[Check]:
    """The issue's targets on one set of rows (tuned or defaults configuration)."""
    checks: list[Check] = []
    top = max(concurrency)
    b64, u64, r64 = (pick(rows, server=s, concurrency=top) for s in (batched, unbatched, raw))
    checks.append(throughput_check(key, f"c={top} batched req/s vs raw", b64, r64, BATCHED_VS_RAW))
    checks.append(throughput_check(key, f"c={top} unbatched req/s vs raw", u64, r64, UNBATCHED_VS_RAW))
    for c in concurrency:
        b, u = pick(rows, server=batched, concurrency=c), pick(rows, server=unbatched, concurrency=c)
        checks.append(throughput_check(key, f"c={c} batched req/s vs unbatched", b, u, BATCHED_VS_UNBATCHED,
                                       note=f"p50 {b['p50_ms']:.2f} vs {u['p50_ms']:.2f} ms"))
    tail, tails = per_repeat(b64, lambda r: r["p99_ms"] / max(r["p50_ms"], 1e-9))
    raw_tail = r64["p99_ms"] / max(r64["p50_ms"], 1e-9)
    checks.append(at_most(key, f"c={top} batched p99 / p50", tail, None, TAIL_P99_OVER_P50,
                          note=f"per repeat {[round(x, 2) for x in tails]}; p50 {b64['p50_ms']:.1f} ms, p99 "
                               f"{b64['p99_ms']:.1f} ms; raw {raw_tail:.2f}, unbatched "
                               f"{u64['p99_ms'] / max(u64['p50_ms'], 1e-9):.2f}"))
    b1, r1 = pick(rows, server=batched, concurrency=1), pick(rows, server=raw, concurrency=1)
    p50, each = paired_ratio(b1, r1, "p50_ms")
    checks.append(at_most(key, "c=1 batched p50 vs raw", b1["p50_ms"], r1["p50_ms"], C1_P50_VS_RAW, unit="ms",
                          paired=p50, note=f"paired {[round(x, 2) for x in each]}; p99 {b1['p99_ms']:.2f} vs "
                                           f"{r1['p99_ms']:.2f} ms"))
    for name, row in (("batched", b64), ("unbatched", u64)):
        cost, costs = paired_ratio(row, r64, "server_us_per_op")
        checks.append(info(key, f"c={top} {name} server CPU per request vs raw", row["server_us_per_op"] or 0,
                           r64["server_us_per_op"], unit="us", paired=cost,
                           note=f"paired {[round(x, 2) for x in costs]}; {row['server_us_per_op'] or 0:.0f} - "
                                f"{r64['server_us_per_op'] or 0:.0f} = "
                                f"{(row['server_us_per_op'] or 0) - (r64['server_us_per_op'] or 0):+.0f} us over raw"))
    return checks


def scenario_matmul(t: Timing) -> ScenarioResult:
    """The main table: raw, batched, unbatched at c = 1, 4, 16, 64."""
    servers = [
        ServerSpec("raw", RAW_SERVER_CMD),
        ServerSpec("blazerpc-batched", blazerpc_cmd(BENCH_APP)),
        ServerSpec("blazerpc-unbatched", blazerpc_cmd(UNBATCHED_APP)),
    ]
    configs = repeated(t, [load(t, "classify", c) for c in CONCURRENCY])
    rows = collapse_repeats(interleave(servers, configs, label="matmul"))
    checks = table_checks("matmul", rows, "blazerpc-batched", "blazerpc-unbatched")
    return ScenarioResult("matmul", "x @ W, one (1, 512) row per request: raw grpclib, batched (max 32), unbatched",
                          rows, checks, {"timing": t.__dict__, "servers": [s.__dict__ for s in servers]},
                          columns=TABLE_COLUMNS)


def scenario_defaults(t: Timing) -> ScenarioResult:
    """The same model with the CLI defaults (access log on), beside raw and the tuned batched server."""
    servers = [
        ServerSpec("raw", RAW_SERVER_CMD),
        ServerSpec("batched-defaults", blazerpc_cmd(BENCH_APP, defaults=True)),
        ServerSpec("unbatched-defaults", blazerpc_cmd(UNBATCHED_APP, defaults=True)),
        ServerSpec("batched-tuned", blazerpc_cmd(BENCH_APP)),
    ]
    conc = (1, 64)
    configs = repeated(t, [load(t, "classify", c) for c in conc])
    rows = collapse_repeats(interleave(servers, configs, label="defaults"))
    checks = table_checks("defaults", rows, "batched-defaults", "unbatched-defaults", concurrency=conc)
    for c in conc:
        dflt, tuned = pick(rows, server="batched-defaults", concurrency=c), pick(rows, server="batched-tuned",
                                                                                  concurrency=c)
        extra, _ = paired_ratio(dflt, tuned, "server_us_per_op")
        diff = [round(a["server_us_per_op"] - b["server_us_per_op"], 1)
                for a, b in zip(dflt.get("repeats") or [dflt], tuned.get("repeats") or [tuned], strict=True)]
        checks.append(info("defaults", f"c={c} batched, defaults vs --log-level WARNING: server CPU per request",
                           dflt["server_us_per_op"] or 0, tuned["server_us_per_op"], unit="us", paired=extra,
                           note=f"the access log costs {median(diff):+.0f} us/request (paired {diff}); req/s "
                                f"{dflt['rps']:.0f} vs {tuned['rps']:.0f}, p50 {dflt['p50_ms']:.2f} vs "
                                f"{tuned['p50_ms']:.2f} ms"))
    return ScenarioResult("defaults", "the same model with the CLI defaults (--log-level INFO, access log on)", rows,
                          checks, {"timing": t.__dict__, "servers": [s.__dict__ for s in servers]},
                          columns=TABLE_COLUMNS)


def scenario_add(t: Timing) -> ScenarioResult:
    """Scalar add at c=64 vs raw, tuned and with the defaults."""
    servers = [
        ServerSpec("raw", RAW_SERVER_CMD),
        ServerSpec("blazerpc", blazerpc_cmd(BENCH_APP)),
        ServerSpec("blazerpc-defaults", blazerpc_cmd(BENCH_APP, defaults=True)),
    ]
    rows = collapse_repeats(interleave(servers, repeated(t, [load(t, "add", 64)]), label="add"))
    raw = pick(rows, server="raw")
    checks = [throughput_check("add", "c=64 add req/s vs raw", pick(rows, server="blazerpc"), raw, ADD_VS_RAW),
              throughput_check("add", "c=64 add req/s vs raw, CLI defaults", pick(rows, server="blazerpc-defaults"),
                               raw, ADD_VS_RAW)]
    return ScenarioResult("add", "scalar add(a, b) at c=64 vs raw grpclib", rows, checks, {"timing": t.__dict__},
                          columns=TABLE_COLUMNS)


def scenario_accelerator(t: Timing) -> ScenarioResult:
    """Accelerator-like model (2 ms per call whatever the batch, no overlap) at c=64: batched vs unbatched."""
    servers = [
        ServerSpec("blazerpc-batched", blazerpc_cmd(BENCH_APP), metrics=1, model="slow"),
        ServerSpec("blazerpc-unbatched", blazerpc_cmd(UNBATCHED_APP), metrics=1, model="slow"),
    ]
    rows = collapse_repeats(interleave(servers, repeated(t, [load(t, "slow", 64)]), label="accelerator"))
    on, off = pick(rows, server="blazerpc-batched"), pick(rows, server="blazerpc-unbatched")
    gain, gains = paired_ratio(on, off)
    checks = [
        at_least("accelerator", "c=64 batched req/s vs unbatched", on["rps"], off["rps"], ACCELERATOR_GAIN,
                 unit="req/s", paired=gain,
                 note=f"paired {[round(x, 2) for x in gains]}; {on.get('mean_rows_per_batch', 0):.1f} rows/batch; "
                      f"p50/p99 {on['p50_ms']:.1f}/{on['p99_ms']:.1f} ms vs {off['p50_ms']:.1f}/{off['p99_ms']:.1f} "
                      f"ms; the unbatched ceiling is 1 / 2 ms = 500 req/s"),
    ]
    return ScenarioResult("accelerator", "accelerator-like model (2 ms per call, calls cannot overlap), c=64", rows,
                          checks, {"timing": t.__dict__}, columns=(*TABLE_COLUMNS, "mean_rows_per_batch"))


TABLE_COLUMNS = (
    "server", "scenario", "concurrency", "rps", "p50_ms", "p90_ms", "p99_ms", "errors", "server_cpu", "client_cpu",
    "other_cpu", "limit", "server_us_per_op",
)


# --------------------------------------------------------------------------- footprint


def scenario_footprint(t: Timing, starts: int = 3) -> ScenarioResult:
    """Idle RSS (server and children, once ready) and spawn-to-first-answer time, median of ``starts``."""
    servers = [ServerSpec("raw", RAW_SERVER_CMD), ServerSpec("blazerpc", blazerpc_cmd(BENCH_APP, defaults=True))]
    rows: list[dict[str, Any]] = []
    with bench_lock():
        for i in range(starts):
            for spec in servers if i % 2 == 0 else servers[::-1]:
                busy = machine_busy_seconds()
                with running_server(spec.cmd, name=spec.name, env=spec.env) as server:
                    # Everything else busy while it started (other sessions' work), in cores.
                    other = (machine_busy_seconds() - busy - server.cpu_seconds()) / max(server.ready_s, 1e-3)
                    rows.append({"server": spec.name, "start": i, "ready_s": round(server.ready_s, 3),
                                 "idle_rss_mib": round(server.idle_rss_mib, 1), "other_cpu": round(max(0, other), 2)})
                print(f"  [footprint] {spec.name:<9} ready {server.ready_s:.2f} s, idle RSS "
                      f"{server.idle_rss_mib:.1f} MiB, other_cpu {rows[-1]['other_cpu']:.2f}", flush=True)
    summary = {s.name: {k: median([r[k] for r in rows if r["server"] == s.name]) for k in ("ready_s", "idle_rss_mib")}
               for s in servers}
    ours, raw = summary["blazerpc"], summary["raw"]
    checks = [
        at_most("footprint", "idle RSS", ours["idle_rss_mib"], None, IDLE_RSS_MIB, unit="MiB",
                note=f"median of {starts} starts (CLI defaults, bench app: add, classify, slow); raw grpclib "
                     f"{raw['idle_rss_mib']:.1f} MiB"),
        at_most("footprint", "time to ready", ours["ready_s"], None, READY_S, unit="s",
                note=f"spawn to first correct answer, median of {starts}; raw grpclib {raw['ready_s']:.2f} s"),
    ]
    return ScenarioResult("footprint", "idle memory and time to ready", rows, checks,
                          {"starts": starts, "medians": summary},
                          columns=("server", "start", "ready_s", "idle_rss_mib", "other_cpu"))
