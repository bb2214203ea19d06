"""Streaming: blazerpc's server streaming against the raw grpclib handler, same run.

Measures, for both servers (started once, pinned to CPU 0, the load generator on CPU 1,
alternating window by window):

* ``stream-1``: items/s of one stream of 10,000 short strings at a time;
* ``stream-16``: items/s of 16 streams of 1,000 items in flight (short enough that every
  window holds many whole streams);
* ``ttfi`` vs ``unary``: time to the first item of a one-item stream against a unary
  call's latency (``add``), both one call at a time.

Targets (issue 16): blazerpc's items/s >= 1.3x raw (judged on server CPU per item when
the load generator is the limit, as it usually is for streams); blazerpc's time to first
item <= 1.1x its own unary p50. Writes ``results/streaming.json``.

    python -m benchmarks.bench_streaming            # about two and a half minutes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import RAW_SERVER_CMD, markdown_table, write_results
from benchmarks.loadgen import LoadConfig
from benchmarks.scenarios import ServerSpec, Timing, interleave
from benchmarks.suite import (
    Check,
    ScenarioResult,
    at_most,
    blazerpc_cmd,
    collapse_repeats,
    info,
    paired_ratio,
    pick,
    throughput_check,
)

STREAMING_APP = "benchmarks/apps/streaming_app.py"
THROUGHPUT_TARGET = 1.3  # blazerpc items/s over raw items/s
TTFI_TARGET = 1.1  # blazerpc time to first item over its unary p50
LONG, SHORT = 10_000, 1_000
COLUMNS = (
    "server", "case", "concurrency", "tokens", "items_per_s", "rps", "p50_ms", "ttfi_p50_ms", "errors", "server_cpu",
    "client_cpu", "other_cpu", "limit", "server_us_per_op",
)


def cases(t: Timing) -> dict[str, LoadConfig]:
    """Case name -> load; the latency cases get half a window (thousands of calls are plenty)."""
    short = max(t.duration / 2, 1.0)
    return {
        "stream-1": LoadConfig(method="tokens", tokens=LONG, concurrency=1, duration=t.duration, warmup=t.warmup,
                               timeout=120.0),
        "stream-16": LoadConfig(method="tokens", tokens=SHORT, concurrency=16, duration=t.duration, warmup=t.warmup,
                                timeout=120.0),
        "ttfi": LoadConfig(method="tokens", tokens=1, concurrency=1, duration=short, warmup=t.warmup),
        "unary": LoadConfig(method="add", concurrency=1, duration=short, warmup=t.warmup),
    }


def run(t: Timing) -> ScenarioResult:
    """Every case on both servers, ``t.repeats`` times; checks against the targets."""
    named = cases(t)
    servers = [ServerSpec("raw", RAW_SERVER_CMD), ServerSpec("blazerpc", blazerpc_cmd(STREAMING_APP))]
    rows = interleave(servers, [cfg for _ in range(t.repeats) for cfg in named.values()], label="streaming")
    by_cfg = {(cfg.method, cfg.tokens, cfg.concurrency): case for case, cfg in named.items()}
    for row in rows:
        row["case"] = by_cfg[(row["scenario"], row["result"]["config"]["tokens"], row["concurrency"])]
        row["scenario"] = row["case"]  # so collapse_repeats keeps the two 1-call cases apart
        if not row["case"].startswith("stream"):
            row["tokens"] = row["tokens"] if row["case"] == "ttfi" else None
    rows = collapse_repeats(rows)
    checks: list[Check] = []
    for case in ("stream-1", "stream-16"):
        ours, raw = pick(rows, server="blazerpc", case=case), pick(rows, server="raw", case=case)
        checks.append(throughput_check("streaming", f"{case} items/s vs raw", ours, raw, THROUGHPUT_TARGET,
                                       key="items_per_s", unit="items/s"))
    for server in ("blazerpc", "raw"):
        first, unary = pick(rows, server=server, case="ttfi"), pick(rows, server=server, case="unary")
        ttfi = {**first, "p50_ms": first["ttfi_p50_ms"],
                "repeats": [{**r, "p50_ms": r["ttfi_p50_ms"]} for r in first.get("repeats") or [first]]}
        r, each = paired_ratio(ttfi, unary, "p50_ms")
        note = (f"paired {[round(x, 2) for x in each]}; {first['ttfi_p50_ms']:.3f} vs {unary['p50_ms']:.3f} ms; "
                f"server CPU per 1-item stream {first['server_us_per_op']} us vs {unary['server_us_per_op']} us "
                "per unary call")
        name = f"{server} time to first item vs its unary p50"
        if server == "blazerpc":
            checks.append(at_most("streaming", name, first["ttfi_p50_ms"], unary["p50_ms"], TTFI_TARGET, unit="ms",
                                  paired=r, note=note))
        else:
            checks.append(info("streaming", name, first["ttfi_p50_ms"], unary["p50_ms"], unit="ms", paired=r,
                               note=note))
    return ScenarioResult("streaming", "server streaming vs raw grpclib", rows, checks,
                          {"timing": t.__dict__, "tokens": {"stream-1": LONG, "stream-16": SHORT}}, columns=COLUMNS)


def main(argv: list[str] | None = None) -> int:
    """CLI: run the streaming scenario alone, print it, write results/streaming.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per window")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats; the median is reported")
    args = parser.parse_args(argv)
    res = run(Timing(args.duration, args.warmup, args.repeats))
    path = write_results("streaming", res.rows, meta=res.to_dict() | {"rows": None})
    print(markdown_table(res.rows, COLUMNS))
    for c in res.checks:
        print(f"{c.name}: {c.ratio:.3f}x (target {c.target}) {c.verdict}  {c.note}")
    print(f"wrote {path}")
    return 0 if all(r["errors"] == 0 for r in res.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
