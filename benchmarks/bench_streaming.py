"""Streaming benchmark: blazerpc's server streaming against the raw grpclib handler, same run.

Measures, for both servers (each pinned to CPU 0, the load generator on the rest):

* ``stream-1``: tokens/s of one stream of 10,000 short strings at a time;
* ``stream-16``: aggregate tokens/s of 16 such streams in flight;
* ``ttfi`` vs ``unary``: time to the first item of a one-item stream against the latency
  of a unary call, both one call at a time.

Targets: blazerpc's tokens/s >= 0.8x raw in both stream rows; blazerpc's time to first
item within 1.2x of its own unary latency. The servers alternate over ``--rounds`` rounds
and each case reports its median round, so load from other processes on a shared machine
hits both alike. ``server_us_per_op`` (server CPU per item) is the number least moved by
such load. Writes ``results/streaming.json`` and prints a table and the verdicts.

    python -m benchmarks.bench_streaming            # about four minutes
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import RAW_SERVER_CMD, markdown_table, run_suite, write_results
from benchmarks.loadgen import LoadConfig

BLAZERPC_CMD = "blazerpc serve benchmarks/apps/streaming_app.py --port {port} --log-level WARNING"
SERVERS = (("raw", RAW_SERVER_CMD), ("blazerpc", BLAZERPC_CMD))
TOKENS = 10_000
THROUGHPUT_TARGET = 0.8  # blazerpc tokens/s over raw tokens/s
TTFI_TARGET = 1.2  # blazerpc time to first item over its unary latency
COLUMNS = (
    "server",
    "case",
    "concurrency",
    "tokens",
    "items_per_s",
    "rps",
    "p50_ms",
    "ttfi_p50_ms",
    "errors",
    "server_cpu",
    "client_cpu",
    "limit",
    "server_us_per_op",
)


def cases(duration: float, warmup: float) -> list[tuple[str, LoadConfig]]:
    """(case name, load) for one server.

    Only calls that complete inside the window count, with all their items, so a window
    must hold many whole streams: stream rows get twice (one stream) and three times
    (16 streams) the window of the latency rows.
    """
    stream = LoadConfig(method="tokens", tokens=TOKENS, warmup=warmup, timeout=120.0)
    return [
        ("stream-1", replace(stream, concurrency=1, duration=duration * 2)),
        ("stream-16", replace(stream, concurrency=16, duration=duration * 3, warmup=warmup * 3)),
        ("ttfi", LoadConfig(method="tokens", tokens=1, concurrency=1, duration=duration, warmup=warmup)),
        ("unary", LoadConfig(method="add", concurrency=1, duration=duration, warmup=warmup)),
    ]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Alternate the servers round by round, so load from other processes hits both alike;
    report each case's median round."""
    named = cases(args.duration, args.warmup)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for server, cmd in SERVERS:
            rows = run_suite(server, cmd, [cfg for _, cfg in named], pin=not args.no_pin)
            for (case, _), row in zip(named, rows, strict=True):
                row["case"] = case
                runs.setdefault((server, case), []).append(row)
    return [_median(rows) for rows in runs.values()]


def _median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if len(rows) == 1:
        return rows[0]
    key = "items_per_s" if rows[0]["case"].startswith("stream") else "rps"
    ranked = sorted(rows, key=lambda r: r[key])
    row = dict(ranked[(len(ranked) - 1) // 2])
    row[f"{key}_rounds"] = [r[key] for r in rows]
    return row


def verdicts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios against the targets; ``met`` is False when any target is missed."""
    row = {(r["server"], r["case"]): r for r in rows}
    out: dict[str, Any] = {}
    for case in ("stream-1", "stream-16"):
        ratio = row["blazerpc", case]["items_per_s"] / max(row["raw", case]["items_per_s"], 1e-9)
        out[f"{case} tokens/s vs raw"] = {
            "ratio": round(ratio, 3), "target": f">= {THROUGHPUT_TARGET}", "met": ratio >= THROUGHPUT_TARGET,
        }
        cpu = (row["blazerpc", case]["server_us_per_op"] or 0) / max(row["raw", case]["server_us_per_op"] or 0, 1e-9)
        out[f"{case} server CPU per token vs raw"] = {"ratio": round(cpu, 3)}
    for server in ("blazerpc", "raw"):
        ratio = row[server, "ttfi"]["ttfi_p50_ms"] / max(row[server, "unary"]["p50_ms"], 1e-9)
        entry: dict[str, Any] = {"ratio": round(ratio, 3)}
        if server == "blazerpc":
            entry |= {"target": f"<= {TTFI_TARGET}", "met": ratio <= TTFI_TARGET}
        out[f"{server} time to first item vs unary p50"] = entry
    out["met"] = all(v.get("met", True) for v in out.values() if isinstance(v, dict))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds (x2, x3 for streams)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the servers to CPU 0")
    args = parser.parse_args(argv)
    rows = run(args)
    summary = verdicts(rows)
    path = write_results(
        "streaming",
        rows,
        meta={"argv": sys.argv[1:] if argv is None else argv, "tokens": TOKENS, "verdicts": summary},
    )
    print()
    print(markdown_table(rows, COLUMNS))
    print()
    for name, verdict in summary.items():
        if isinstance(verdict, dict):
            target = (
                f" (target {verdict['target']}: {'met' if verdict['met'] else 'MISSED'})" if "target" in verdict else ""
            )
            print(f"{name}: {verdict['ratio']}{target}")
    print(f"\nwrote {path}")
    errors = sum(r["errors"] for r in rows)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
