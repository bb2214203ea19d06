"""Prove the harness end to end on the raw baseline server.

Runs scenario "add" at concurrency 1/16/64, then c=64 again with two client
processes: if throughput does not rise with a second client process, the load
generator was not the limit.

    python benchmarks/run_baseline_demo.py            # ~30 s
"""

from __future__ import annotations

import argparse
import sys

from harness import RAW_SERVER_CMD, markdown_table, run_suite, write_results
from loadgen import LoadConfig

TOLERANCE = 0.10  # run-to-run noise on a shared 2-core machine is ~5-10 %


def demo_configs(duration: float, warmup: float) -> list[LoadConfig]:
    """add at c=1/16/64 with one client process, plus c=64 with two."""
    configs = [LoadConfig(method="add", concurrency=c, duration=duration, warmup=warmup) for c in (1, 16, 64)]
    configs.append(LoadConfig(method="add", concurrency=64, duration=duration, warmup=warmup, processes=2))
    return configs


def loadgen_verdict(rows: list[dict[str, object]]) -> str:
    """Compare c=64 with 1 vs 2 client processes."""
    one, two = (next(r for r in rows if r["concurrency"] == 64 and r["processes"] == p) for p in (1, 2))
    rps1, rps2 = float(str(one["rps"])), float(str(two["rps"]))
    gain = rps2 / rps1 - 1.0
    client_bound = "client" in str(one["limit"])
    ok = gain <= TOLERANCE and not client_bound
    return (
        f"c=64: 1 client process {rps1:.0f} req/s (server_cpu={one['server_cpu']}, "
        f"client_cpu={one['client_cpu']}), 2 processes {rps2:.0f} req/s ({gain:+.1%}). "
        + (
            "Loadgen is not the bottleneck."
            if ok
            else "WARNING: a second client process helped or the client was saturated; "
            "use --processes 2 or more."
        )
    )


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--name", default="baseline_demo")
    args = parser.parse_args(argv)
    rows = run_suite(
        "raw",
        RAW_SERVER_CMD,
        demo_configs(args.duration, args.warmup),
        pin=not args.no_pin,
        repeats=args.repeats,
    )
    verdict = loadgen_verdict(rows)
    path = write_results(args.name, rows, meta={"demo": True, "verdict": verdict})
    print()
    print(markdown_table(rows))
    print()
    print(verdict)
    print(f"wrote {path}")
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
