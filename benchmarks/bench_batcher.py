"""Scenario 5: the batcher alone, in process, no network.

Many coroutines submit small requests to one :class:`~blazerpc_core.runtime.batcher.Batcher`
(built exactly as the server builds it: schema → ``blazerpc_batching_policy`` hook →
``create_runner``) for a cheap sync model, so the rows/s measure the batcher's own cost:
queueing, one thread hop per batch, concatenate, split, settling one future per request.
The baseline in the same run calls the same function directly, once per request, in a
loop: the cost floor with no batcher and no event loop at all.

Each case runs in a spawned child pinned to one CPU (the core the servers get in the
network scenarios), so the thread pool cannot borrow the other core and the numbers stay
comparable with ``server_us_per_op``. Target: >= 50,000 rows/s through the batcher.

    python -m benchmarks.bench_batcher                # about 20 s
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

if not __package__:  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import bench_lock, machine_busy_seconds, markdown_table, write_results
from blazerpc_core import BlazeApp, TensorInput, TensorOutput

TARGET_ROWS_PER_S = 50_000
COLS = 16
#: (submitters, rows per request, max_batch_size): many callers with one row, fewer with a
#: few, at the server's default batch size (None = 32); then 256 x 1 with batches as large as
#: the submitters can fill, to show what the per-batch costs (thread hop, concatenate) weigh.
CASES: tuple[tuple[int, int, int | None], ...] = ((256, 1, None), (64, 4, None), (256, 1, 128))
DEFAULT_CPU = 0  # the core the network scenarios pin servers to


def double(x: TensorInput[np.float32, "batch", 16]) -> TensorOutput[np.float32, "batch", 16]:
    """A sync model cheap enough that the batcher's overhead dominates."""
    return x * 2


@dataclass
class BatcherResult:
    """One case: rows/s through the batcher or directly, and the CPU it took."""

    mode: str  # "batcher" | "direct"
    submitters: int
    rows_per_request: int
    max_batch_size: int | None
    duration_s: float
    rows: int
    rows_per_s: float
    requests_per_s: float
    cpu_cores: float  # process CPU seconds per window second
    cpu_us_per_row: float
    other_cpu: float = 0.0  # cores other processes used meanwhile (noise)
    batches: int = 0
    mean_rows_per_batch: float = 0.0
    wrong_answers: int = 0


class _BatchCounter:
    """A BatchObserver that counts dispatched batches and rows."""

    def __init__(self) -> None:
        self.batches = 0
        self.rows = 0
        self.counting = False

    def batch_dispatched(self, spec: Any, rows: int, requests: int) -> None:
        if self.counting:
            self.batches += 1
            self.rows += rows

    def queue_wait(self, spec: Any, seconds: float) -> None:
        return None

    def queue_depth(self, spec: Any, rows: int) -> None:
        return None


async def _run_batcher(
    submitters: int, rows: int, duration: float, warmup: float, max_batch_size: int | None
) -> BatcherResult:
    """Closed loop: every submitter awaits its answer, checks it, and submits again."""
    from blazerpc_core.middleware import CallContext
    from blazerpc_core.plugins import make_plugin_manager
    from blazerpc_core.runtime.events import BatchEvents
    from blazerpc_core.runtime.executor import Invoker, make_pool
    from blazerpc_core.schema.builder import build_schema
    from blazerpc_core.settings import BatchSettings, ServeSettings

    app = BlazeApp()
    app.model("double")(double)
    pm = make_plugin_manager(load_entry_points=False)
    method = build_schema(app.registry, pm).methods[0]
    settings = ServeSettings(batching=BatchSettings(max_batch_size=max_batch_size))
    policy = pm.hook.blazerpc_batching_policy(spec=method.spec, settings=settings)
    pool = make_pool(settings.max_workers)
    events = BatchEvents()
    counter = _BatchCounter()
    events.subscribe(counter)
    runner = policy.create_runner(method, Invoker(double, is_async=False, pool=pool), events)
    if not hasattr(runner, "queue"):
        raise RuntimeError(f"model 'double' was not batched (runner {type(runner).__name__})")
    await runner.start()
    ctx = CallContext(model=method.spec, rpc=method.rpc, path=method.path, metadata={}, peer=None, deadline=None)

    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((rows, COLS), dtype=np.float32) for _ in range(submitters)]
    t0 = time.monotonic()
    w_start, w_end = t0 + warmup, t0 + warmup + duration
    done_rows = 0
    wrong = 0

    async def submitter(x: np.ndarray[Any, Any]) -> None:
        nonlocal done_rows, wrong
        # Distinct inputs, checked on every answer: rows handed to the wrong caller show up.
        want = float(x[0, 0]) * 2
        args = [x]
        while time.monotonic() < w_end:
            out = await runner.submit(args, ctx)
            if w_start <= time.monotonic() <= w_end:
                if out.shape != x.shape or float(out[0, 0]) != want:
                    wrong += 1
                else:
                    done_rows += rows

    async def mark_window() -> tuple[float, float]:
        await asyncio.sleep(max(0.0, w_start - time.monotonic()))
        counter.counting = True
        c0, m0 = time.process_time(), machine_busy_seconds()
        await asyncio.sleep(max(0.0, w_end - time.monotonic()))
        counter.counting = False
        c1, m1 = time.process_time(), machine_busy_seconds()
        return c1 - c0, m1 - m0

    window = asyncio.ensure_future(mark_window())
    await asyncio.gather(*(submitter(x) for x in inputs))
    own, machine = await window
    await runner.stop()
    pool.shutdown(wait=True)
    cpu = own / duration
    return BatcherResult(
        mode="batcher",
        submitters=submitters,
        rows_per_request=rows,
        max_batch_size=runner.config.max_batch_size,
        duration_s=duration,
        rows=done_rows,
        rows_per_s=done_rows / duration,
        requests_per_s=done_rows / rows / duration,
        cpu_cores=cpu,
        cpu_us_per_row=cpu * duration * 1e6 / max(done_rows, 1),
        other_cpu=max(0.0, (machine - own) / duration),
        batches=counter.batches,
        mean_rows_per_batch=counter.rows / max(counter.batches, 1),
        wrong_answers=wrong,
    )


def _run_direct(submitters: int, rows: int, duration: float, warmup: float) -> BatcherResult:
    """The baseline: the same requests, one direct function call each, in a plain loop."""
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((rows, COLS), dtype=np.float32) for _ in range(submitters)]
    t0 = time.monotonic()
    w_start, w_end = t0 + warmup, t0 + warmup + duration
    while time.monotonic() < w_start:
        for x in inputs:
            double(x)
    done = 0
    c0, m0 = time.process_time(), machine_busy_seconds()
    while time.monotonic() < w_end:
        for x in inputs:  # one sweep between clock reads keeps the clock off the profile
            double(x)
        done += len(inputs)
    own = time.process_time() - c0
    machine = machine_busy_seconds() - m0
    cpu = own / duration
    return BatcherResult(
        mode="direct",
        submitters=submitters,
        rows_per_request=rows,
        max_batch_size=None,
        duration_s=duration,
        rows=done * rows,
        rows_per_s=done * rows / duration,
        requests_per_s=done / duration,
        cpu_cores=cpu,
        cpu_us_per_row=cpu * duration * 1e6 / max(done * rows, 1),
        other_cpu=max(0.0, (machine - own) / duration),
    )


def _pin(cpu: int | None) -> None:
    if cpu is not None and cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})


def run_case(
    mode: str, submitters: int, rows: int, duration: float, warmup: float, max_batch_size: int | None
) -> dict[str, Any]:
    """One case in the current process (the child calls this)."""
    if mode == "direct":
        res = _run_direct(submitters, rows, duration, warmup)
    else:
        res = asyncio.run(_run_batcher(submitters, rows, duration, warmup, max_batch_size))
    return asdict(res)


def run(
    duration: float = 5.0,
    warmup: float = 1.0,
    *,
    cpu: int | None = DEFAULT_CPU,
    cases: tuple[tuple[int, int, int | None], ...] = CASES,
) -> list[dict[str, Any]]:
    """Every case through the batcher, and directly once per (submitters, rows), each in a
    fresh child pinned to ``cpu``.

    A fresh process per case keeps one case's garbage and thread pool out of the next.
    """
    rows_out: list[dict[str, Any]] = []
    ctx = mp.get_context("spawn")
    direct_done: set[tuple[int, int]] = set()
    for submitters, rows, max_batch_size in cases:
        modes = ["batcher"]
        if (submitters, rows) not in direct_done:
            modes.append("direct")
            direct_done.add((submitters, rows))
        for mode in modes:
            with ProcessPoolExecutor(1, mp_context=ctx, initializer=_pin, initargs=(cpu,)) as child:
                row = child.submit(run_case, mode, submitters, rows, duration, warmup, max_batch_size).result()
            row["cpu"] = cpu
            print(
                f"  {mode:7s} {submitters:4d} x {rows} row(s) max_batch={row['max_batch_size']}: "
                f"{row['rows_per_s']:>11,.0f} rows/s "
                f"cpu={row['cpu_cores']:.2f} ({row['cpu_us_per_row']:.1f} us/row) other_cpu={row['other_cpu']:.2f}"
                + (f" rows/batch={row['mean_rows_per_batch']:.1f}" if mode == "batcher" else ""),
                flush=True,
            )
            rows_out.append(row)
    return rows_out


def main(argv: list[str] | None = None) -> int:
    """CLI: run the cases, print them, write results/batcher.json."""

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--cpu", type=int, default=DEFAULT_CPU, help="pin each case to this CPU (-1: no pin)")
    args = parser.parse_args(argv)
    with bench_lock():
        rows = run(args.duration, args.warmup, cpu=None if args.cpu < 0 else args.cpu)
    path = write_results("batcher", rows, meta={"argv": sys.argv[1:] if argv is None else argv})
    cols = ("mode", "submitters", "rows_per_request", "max_batch_size", "rows_per_s", "cpu_cores",
            "cpu_us_per_row", "mean_rows_per_batch", "wrong_answers")
    print(markdown_table(rows, cols))
    print(f"wrote {path}")
    return 0 if all(r["wrong_answers"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
