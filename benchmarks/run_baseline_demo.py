"""Prove the harness end to end on the raw baseline server.

Runs scenario "add" at concurrency 1/16/64, then c=64 again with two client
processes: if throughput does not rise with a second client process, the load
generator was not the limit.

    python benchmarks/run_baseline_demo.py            # ~20 s
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import NOISY, RAW_SERVER_CMD, markdown_table, run_suite, write_results
from benchmarks.loadgen import LoadConfig

TOLERANCE = 0.10  # run-to-run noise on a shared 2-core machine is ~5-10 %


def demo_configs(duration: float, warmup: float) -> list[LoadConfig]:
    """add at c=1/16/64 with one client process, plus c=64 with two."""
    configs = [LoadConfig(method="add", concurrency=c, duration=duration, warmup=warmup) for c in (1, 16, 64)]
    configs.append(LoadConfig(method="add", concurrency=64, duration=duration, warmup=warmup, processes=2))
    return configs


def loadgen_verdict(rows: list[dict[str, Any]]) -> str:
    """Judge the load generator from c=64 with 1 vs 2 client processes.

    Primary signal: the client's CPU use (a saturated client shows
    ``limit=client``). Secondary: a second client process must not raise
    throughput beyond run-to-run noise, which only means something when no
    other process was competing for the CPUs.
    """
    one, two = (next(r for r in rows if r["concurrency"] == 64 and r["processes"] == p) for p in (1, 2))
    gain = two["rps"] / one["rps"] - 1.0
    facts = (
        f"c=64: 1 client process {one['rps']:.0f} req/s (server_cpu={one['server_cpu']}, "
        f"client_cpu={one['client_cpu']}, other_cpu={one['other_cpu']}); 2 processes "
        f"{two['rps']:.0f} req/s ({gain:+.1%}, other_cpu={two['other_cpu']}). "
    )
    if any("client" in str(r["limit"]) for r in (one, two)):
        return facts + "WARNING: the client was saturated; use more --processes."
    if max(one["other_cpu"], two["other_cpu"]) >= NOISY:
        return facts + (
            "Inconclusive: other processes competed for the CPUs; the client was not "
            "saturated. Rerun on an idle machine (or with --repeats 3)."
        )
    if gain > TOLERANCE:
        return facts + "WARNING: a second client process helped; use --processes 2."
    return facts + "Loadgen is not the bottleneck."


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
