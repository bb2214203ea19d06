"""Opt-in: blazerpc against PyTriton and MLServer, same model, same load, same run (``nox -s bench-peers``).

Each peer runs from its own virtualenv (``--pytriton-python`` / ``--mlserver-python``: the
interpreter there), serving ``benchmarks/model.py``'s models through the Open Inference
Protocol (``peers/pytriton_server.py``, ``peers/mlserver_server.py``); the load generator
sends them ``ModelInfer`` with the row as raw bytes in ``raw_input_contents``. blazerpc is
measured on its own ``TensorProto`` rpc and, on the same process, on the Open Inference
Protocol it serves by default. A peer that cannot start is left out, with the reason in
the results.

* ``peers``: ``x @ W``, one (1, 512) row per request, c = 1, 16, 64: raw grpclib, blazerpc
  batched (native and OIP), blazerpc unbatched, PyTriton (dynamic batcher 32, 2 ms),
  MLServer (adaptive batching 32, 5 ms, in process);
* ``peers-accelerator``: the accelerator-like model at c=64; target batched >= 1.5x PyTriton.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmarks.harness import RAW_SERVER_CMD
from benchmarks.scenarios import (
    ACCELERATOR_GAIN,
    BENCH_APP,
    TABLE_COLUMNS,
    UNBATCHED_APP,
    ServerSpec,
    Timing,
    interleave,
    load,
    repeated,
)
from benchmarks.suite import (
    Check,
    ScenarioResult,
    at_least,
    blazerpc_cmd,
    collapse_repeats,
    info,
    paired_ratio,
    pick,
    throughput_check,
)

PEER_CONCURRENCY = (1, 16, 64)
OIP_VS_NATIVE = 0.9
ACCELERATOR_VS_PYTRITON = 1.5


def peer_specs(pytriton: str | None, mlserver: str | None) -> list[ServerSpec]:
    """The peers whose interpreter was given, each probed with a real ModelInfer answer."""
    specs = []
    if pytriton:
        specs.append(ServerSpec("pytriton", f"{pytriton} benchmarks/peers/pytriton_server.py --port {{port}}",
                                probe="oip", protocol="oip", optional=True, ready_timeout=120.0))
    if mlserver:
        specs.append(ServerSpec("mlserver", f"{mlserver} benchmarks/peers/mlserver_server.py --port {{port}}",
                                probe="oip", protocol="oip", optional=True, ready_timeout=120.0))
    return specs


def _missing(names: list[str], failures: dict[str, str], given: dict[str, str | None]) -> dict[str, str]:
    out = dict(failures)
    for name in names:
        if not given.get(name):
            why = os.environ.get(f"BENCH_{name.upper()}_ERROR") or "no interpreter given (--pytriton-python / " \
                "--mlserver-python)"
            out.setdefault(name, why)
        elif not Path(str(given[name])).exists():
            out.setdefault(name, f"interpreter {given[name]} does not exist")
    return out


def scenario_peers(t: Timing, pytriton: str | None, mlserver: str | None) -> ScenarioResult:
    """The main model on every server at c = 1, 16, 64."""
    servers = [
        ServerSpec("raw", RAW_SERVER_CMD),
        ServerSpec("blazerpc-batched", blazerpc_cmd(BENCH_APP)),
        ServerSpec("blazerpc-batched-oip", "", protocol="oip", shares="blazerpc-batched"),
        ServerSpec("blazerpc-unbatched", blazerpc_cmd(UNBATCHED_APP)),
        *peer_specs(pytriton, mlserver),
    ]
    failures: dict[str, str] = {}
    configs = repeated(t, [load(t, "classify", c) for c in PEER_CONCURRENCY])
    rows = collapse_repeats(interleave(servers, configs, label="peers", failures=failures))
    failures = _missing(["pytriton", "mlserver"], failures, {"pytriton": pytriton, "mlserver": mlserver})
    ran = list(dict.fromkeys(r["server"] for r in rows))
    checks: list[Check] = []
    for c in PEER_CONCURRENCY:
        ours = pick(rows, server="blazerpc-batched", concurrency=c)
        oip = pick(rows, server="blazerpc-batched-oip", concurrency=c)
        if c == max(PEER_CONCURRENCY):
            checks.append(throughput_check("peers", f"c={c} blazerpc OIP req/s vs native", oip, ours, OIP_VS_NATIVE))
        for peer in [s for s in ran if s not in ("blazerpc-batched",)]:
            row = pick(rows, server=peer, concurrency=c)
            r, each = paired_ratio(ours, row)
            checks.append(info("peers", f"c={c} blazerpc batched vs {peer}", ours["rps"], row["rps"], unit="req/s",
                               paired=r, note=f"paired {[round(x, 2) for x in each]}; p50 {ours['p50_ms']:.2f} vs "
                                              f"{row['p50_ms']:.2f} ms, p99 {ours['p99_ms']:.1f} vs "
                                              f"{row['p99_ms']:.1f} ms; server {ours['server_us_per_op']} vs "
                                              f"{row['server_us_per_op']} us/op; limit {row['limit']}"))
    for server in ran:
        row = pick(rows, server=server, concurrency=1)
        checks.append(info("peers", f"{server}: idle RSS, MiB (ready in {row['server_ready_s']:.2f} s)",
                           row["server_idle_rss_mib"], None, unit="MiB",
                           note="process tree once it first answered; ready = spawn to first correct answer"))
    for name, why in failures.items():
        checks.append(Check("peers", f"{name} could not run", 0.0, None, None, "-", None, note=why[:600]))
    return ScenarioResult("peers", "x @ W on every server (peers through the Open Inference Protocol)", rows, checks,
                          {"timing": t.__dict__, "failures": failures,
                           "servers": [s.__dict__ for s in servers]}, columns=TABLE_COLUMNS)


def scenario_peers_accelerator(t: Timing, pytriton: str | None, mlserver: str | None) -> ScenarioResult:
    """The accelerator-like model at c=64 on every server."""
    servers = [
        ServerSpec("blazerpc-batched", blazerpc_cmd(BENCH_APP), metrics=1, model="slow"),
        *peer_specs(pytriton, mlserver),
        ServerSpec("blazerpc-unbatched", blazerpc_cmd(UNBATCHED_APP), metrics=1, model="slow"),
    ]
    failures: dict[str, str] = {}
    rows = collapse_repeats(interleave(servers, repeated(t, [load(t, "slow", 64)]), label="peers-accelerator",
                                       failures=failures))
    failures = _missing(["pytriton", "mlserver"], failures, {"pytriton": pytriton, "mlserver": mlserver})
    ran = list(dict.fromkeys(r["server"] for r in rows))
    ours = pick(rows, server="blazerpc-batched")
    off = pick(rows, server="blazerpc-unbatched")
    gain, gains = paired_ratio(ours, off)
    checks: list[Check] = [at_least("peers-accelerator", "c=64 batched req/s vs unbatched", ours["rps"], off["rps"],
                                    ACCELERATOR_GAIN, unit="req/s", paired=gain,
                                    note=f"paired {[round(x, 2) for x in gains]}")]
    for peer in ("pytriton", "mlserver"):
        if peer not in ran:
            continue
        row = pick(rows, server=peer)
        r, each = paired_ratio(ours, row)
        note = (f"paired {[round(x, 2) for x in each]}; p99 {ours['p99_ms']:.1f} vs {row['p99_ms']:.1f} ms; "
                f"blazerpc {ours.get('mean_rows_per_batch', 0):.1f} rows/batch")
        if peer == "pytriton":
            checks.append(at_least("peers-accelerator", "c=64 blazerpc batched req/s vs PyTriton", ours["rps"],
                                   row["rps"], ACCELERATOR_VS_PYTRITON, unit="req/s", paired=r, note=note))
        else:
            checks.append(info("peers-accelerator", f"c=64 blazerpc batched req/s vs {peer}", ours["rps"], row["rps"],
                               unit="req/s", paired=r, note=note))
    for name, why in failures.items():
        checks.append(Check("peers-accelerator", f"{name} could not run", 0.0, None, None, "-", None, note=why[:600]))
    meta: dict[str, Any] = {"timing": t.__dict__, "failures": failures}
    return ScenarioResult("peers-accelerator", "accelerator-like model (2 ms per call, no overlap), c=64, every server",
                          rows, checks, meta, columns=(*TABLE_COLUMNS, "mean_rows_per_batch"))
