"""Run the whole benchmark suite and print every target with PASS / MISS.

    python -m benchmarks.run_all                  # full run, 10-15 minutes
    python -m benchmarks.run_all --quick          # short windows, no repeats, under 4 minutes
    python -m benchmarks.run_all --only 1,3,5     # some scenarios (8 = streaming)

Scenarios (each against a baseline measured in the same run):

1. unary add, c=1/16/64, blazerpc vs raw grpclib          target c=64 >= 0.85x req/s
2. tensor (1,512)->(1,10), c=1/16/64, vs raw grpclib      target c=64 >= 0.8x req/s
3. batched ``slow`` at c=64, batching on vs off           target >= 8x req/s, p99 bounded
4. the same model at c=1, on vs off                       target p50 within 1.2x
5. the batcher in process, no network                     target >= 50,000 rows/s
6. ``--workers 2`` vs ``--workers 1`` (add, c=64)           reported, no target
7. ONNX MLP via blazerpc-onnx vs bare InferenceSession   reported, no target
8. streaming (benchmarks/bench_streaming.py)             its own targets

A scenario in which another process used >= 0.2 cores during a measured window
("noisy") is run once more when the time budget allows, and the quieter attempt is
kept (both are in its JSON). Results: ``benchmarks/results/<scenario>.json`` and
``summary.json`` (``results/quick/`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_batcher, bench_onnx, bench_streaming, scenarios
from benchmarks.harness import RESULTS_DIR, bench_lock, markdown_table, system_info, write_results
from benchmarks.scenarios import Timing
from benchmarks.suite import SERVER_ENV, Check, ScenarioResult, at_least, info


@dataclass
class RunPlan:
    """Durations for one suite run (full or quick)."""

    timing: Timing
    stream_duration: float
    stream_rounds: int
    budget_s: float  # a noisy scenario is rerun only if the whole run still fits in this


FULL = RunPlan(Timing(duration=5.0, warmup=1.0, repeats=3, repeats_vs_raw=5), stream_duration=4.0, stream_rounds=3,
               budget_s=15 * 60)
QUICK = RunPlan(Timing(duration=2.0, warmup=0.5, repeats=1, repeats_vs_raw=1), stream_duration=2.5, stream_rounds=1,
                budget_s=4 * 60)

#: Seconds each scenario takes in a full run on an idle 2-core machine (quick: about a third),
#: used to keep reruns of noisy scenarios from pushing the run past its budget.
EXPECTED_S: dict[str, float] = {"1": 100, "2": 100, "3": 65, "4": 45, "5": 40, "6": 45, "7": 45, "8": 230}


# --------------------------------------------------------------------------- 5 and 8 as ScenarioResults


def scenario_batcher(plan: RunPlan) -> ScenarioResult:
    """Scenario 5: bench_batcher's cases, with the 50,000 rows/s target per case."""
    with bench_lock():
        rows = bench_batcher.run(plan.timing.duration, plan.timing.warmup)
    checks: list[Check] = []
    for submitters, per_req, max_batch in bench_batcher.CASES:
        case = [r for r in rows if r["submitters"] == submitters and r["rows_per_request"] == per_req]
        batched = next(r for r in case if r["mode"] == "batcher" and r["max_batch_size"] == (max_batch or 32))
        direct = next(r for r in case if r["mode"] == "direct")
        name = f"{submitters} x {per_req} row(s), max_batch_size {batched['max_batch_size']}"
        note = (f"{batched['mean_rows_per_batch']:.1f} rows/batch, {batched['cpu_us_per_row']:.1f} us CPU/row at "
                f"{batched['cpu_cores']:.2f} cores; wrong answers {batched['wrong_answers']}")
        if max_batch is None:  # the server's defaults: judged
            checks.append(at_least("5-batcher", f"{name}: rows/s", batched["rows_per_s"], None,
                                   bench_batcher.TARGET_ROWS_PER_S, unit="rows/s", note=note))
        else:
            checks.append(info("5-batcher", f"{name}: rows/s (tuned, not judged)", batched["rows_per_s"], None,
                               unit="rows/s", note=note))
        checks.append(info(
            "5-batcher", f"{name}: vs direct call per request", batched["rows_per_s"], direct["rows_per_s"],
            unit="rows/s", note=f"direct: {direct['cpu_us_per_row']:.2f} us/row",
        ))
    for row in rows:
        row["server"] = f"{row['mode']}-{row['submitters']}x{row['rows_per_request']}"
    columns = ("mode", "submitters", "rows_per_request", "max_batch_size", "rows_per_s", "requests_per_s",
               "mean_rows_per_batch", "cpu_cores", "cpu_us_per_row", "other_cpu", "wrong_answers")
    return ScenarioResult("5-batcher", "the batcher in process (no network), sync model, pinned to CPU 0", rows,
                          checks, {"cases": bench_batcher.CASES, "timing": plan.timing.__dict__}, columns=columns)


def scenario_streaming(plan: RunPlan) -> ScenarioResult:
    """Scenario 8: bench_streaming's entry point; its verdicts become checks."""
    argv = ["--duration", str(plan.stream_duration), "--rounds", str(plan.stream_rounds)]
    bench_streaming.main(argv)
    doc = json.loads((RESULTS_DIR / "streaming.json").read_text())
    checks = []
    for name, verdict in doc["meta"]["verdicts"].items():
        if not isinstance(verdict, dict):
            continue
        r = verdict["ratio"]
        met = verdict.get("met") if "target" in verdict else None
        checks.append(Check("8-streaming", name, r, None, r, verdict.get("target", "-"), met))
    return ScenarioResult("8-streaming", "server streaming vs raw grpclib (bench_streaming.py)", doc["runs"], checks,
                          {"argv": argv, "tokens": doc["meta"].get("tokens")}, columns=bench_streaming.COLUMNS)


Runner = Callable[[RunPlan], ScenarioResult]
SCENARIOS: dict[str, Runner] = {
    "1": lambda p: scenarios.scenario_add(p.timing),
    "2": lambda p: scenarios.scenario_tensor(p.timing),
    "3": lambda p: scenarios.scenario_batch64(p.timing),
    "4": lambda p: scenarios.scenario_batch1(p.timing),
    "5": scenario_batcher,
    "6": lambda p: scenarios.scenario_workers(p.timing),
    "7": lambda p: bench_onnx.run(p.timing),
    "8": scenario_streaming,
}


# --------------------------------------------------------------------------- reporting


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return f"{text} {unit}".rstrip() if unit else text


def summary_table(results: list[ScenarioResult]) -> str:
    """One line per check: measured, baseline, ratio, target, verdict, and how noisy the run was."""
    lines = [
        "| scenario | check | blazerpc | baseline | ratio | target | verdict | max other_cpu | note |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | ---: | --- |",
    ]
    for res in results:
        for c in res.checks:
            ratio = "-" if c.ratio is None else f"{c.ratio:.3f}x" if c.ratio >= 0.1 else f"{c.ratio:.2g}x"
            lines.append(
                f"| {c.scenario} | {c.name} | {_num(c.value, c.unit)} | {_num(c.baseline, c.unit)} | {ratio} | "
                f"{c.target} | **{c.verdict}** | {res.max_other_cpu():.2f} | {c.note} |"
            )
    return "\n".join(lines)


def machine_description() -> dict[str, Any]:
    """nproc, the head of lscpu and the load average: what a reader needs to weigh the numbers."""
    def run(cmd: str) -> str:
        try:
            return subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "nproc": run("nproc"),
        "lscpu_head": run("lscpu").splitlines()[:12],
        "loadavg": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else [],
    } | system_info()


# --------------------------------------------------------------------------- driver


def run_scenario(key: str, plan: RunPlan, started: float, rerun_noisy: bool, still_to_run: float) -> ScenarioResult:
    """Run one scenario; if it was noisy and time allows, once more, keeping the quieter attempt.

    ``still_to_run`` is the expected duration of the scenarios after this one, so a
    rerun never eats the time they need.
    """
    t0 = time.monotonic()
    first = SCENARIOS[key](plan)
    took = time.monotonic() - t0
    attempts = [first]
    elapsed = time.monotonic() - started
    if first.noisy() and rerun_noisy:
        if elapsed + took + still_to_run <= plan.budget_s:
            print(f"## scenario {key} was noisy (max other_cpu {first.max_other_cpu():.2f}); running it once more",
                  flush=True)
            attempts.append(SCENARIOS[key](plan))
        else:
            print(f"## scenario {key} was noisy, but a rerun ({took:.0f}s) would pass the time budget", flush=True)
    best = min(attempts, key=lambda r: r.max_other_cpu())
    best.meta["attempts"] = [
        {"max_other_cpu": round(a.max_other_cpu(), 3), "kept": a is best,
         "checks": {c.name: (c.ratio if c.ratio is not None else c.value) for c in a.checks},
         **({} if a is best else {"rows": a.rows})}
        for a in attempts
    ]
    best.meta["seconds"] = round(time.monotonic() - t0, 1)
    return best


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exits non-zero only when a scenario failed to run or calls failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 s windows, no repeats, no reruns (< 4 min)")
    parser.add_argument("--only", default="", help="comma list of scenario numbers, e.g. 1,3 (8 = streaming)")
    parser.add_argument("--no-rerun", action="store_true", help="never rerun a noisy scenario")
    parser.add_argument("--results-dir", type=Path, default=None, help="default results/ (results/quick/ if --quick)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    keys = [k.strip() for k in args.only.split(",") if k.strip()] or list(SCENARIOS)
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    out_dir = args.results_dir or (RESULTS_DIR / "quick" if args.quick else RESULTS_DIR)
    for name, value in SERVER_ENV.items():  # bench_streaming's servers inherit this
        os.environ.setdefault(name, value)

    command = "python -m benchmarks.run_all " + shlex.join(sys.argv[1:] if argv is None else argv)
    machine = machine_description()
    print(f"# {command.strip()}\n# {machine['cpu_model']}, nproc={machine['nproc']}, load {machine['loadavg']}",
          flush=True)
    started = time.monotonic()
    results: list[ScenarioResult] = []
    failed: dict[str, str] = {}
    scale = 1.0 if plan is FULL else 0.35
    for i, key in enumerate(keys):
        print(f"\n## scenario {key}", flush=True)
        still_to_run = scale * sum(EXPECTED_S[k] for k in keys[i + 1 :])
        try:
            res = run_scenario(key, plan, started, not (args.quick or args.no_rerun), still_to_run)
        except Exception:
            failed[key] = traceback.format_exc()
            print(f"## scenario {key} FAILED\n{failed[key]}", file=sys.stderr, flush=True)
            continue
        results.append(res)
        write_results(res.key, res.rows, meta=res.to_dict() | {"rows": None}, results_dir=out_dir)
        print(f"\n### {res.key}: {res.title}\n")
        print(markdown_table(res.rows, res.columns))
    elapsed = time.monotonic() - started

    table = summary_table(results)
    doc = {
        "command": command.strip(),
        "elapsed_s": round(elapsed, 1),
        "machine": machine,
        "failed": failed,
        "checks": [c for r in results for c in r.to_dict()["checks"]],
        "noisy": {r.key: round(r.max_other_cpu(), 3) for r in results},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / "summary.md").write_text(table + "\n")
    print(f"\n## summary ({elapsed / 60:.1f} min)\n")
    print(table)
    misses = [f"{c.scenario} {c.name}" for r in results for c in r.checks if c.met is False]
    print(f"\nmissed: {', '.join(misses) or 'none'}")
    if failed:
        print(f"failed to run: {', '.join(failed)}")
    print(f"wrote {out_dir / 'summary.json'}")
    errors = sum(int(row.get("errors") or 0) for r in results for row in r.rows)
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
