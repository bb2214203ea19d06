"""The app ``benchmarks/bench_overload.py`` overloads: two unbatched 20 ms models that count their runs.

``sleepy`` sleeps 20 ms, so several calls run at once on the model thread pool (an I/O- or
accelerator-bound model); ``spin`` spends 20 ms of its thread's CPU time in Python
bytecode, so calls share the one core and the GIL (a CPU-bound model). Each request carries
the caller's deadline as ``time.monotonic()`` seconds (the clock is system-wide on Linux,
so client and server read the same one), which lets the model tell whether its run
finished after the caller had given up: work the server should not have started.
``stats`` reports those counts (the benchmark takes their difference across a window); it
is async, so it answers from the event loop even while every pool thread is busy.

    blazerpc serve benchmarks/apps/overload_app.py --port 50051
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from blazerpc_core import BlazeApp

WORK_S = 0.020  # per call, the model

app = BlazeApp()

_lock = threading.Lock()
_runs = {"sleepy": 0, "spin": 0}
_late = {"sleepy": 0, "spin": 0}
_late_ms = {"sleepy": 0.0, "spin": 0.0}


def _record(name: str, deadline_at: float) -> None:
    """Count one finished run, and whether (and by how much) it ended after the caller's deadline (0: none)."""
    over = time.monotonic() - deadline_at if deadline_at > 0 else 0.0
    with _lock:
        _runs[name] += 1
        if over > 0:
            _late[name] += 1
            _late_ms[name] += over * 1000


@app.model("sleepy")
def sleepy(deadline_at: float) -> float:
    """20 ms of waiting that holds a pool thread but not the GIL."""
    time.sleep(WORK_S)
    _record("sleepy", deadline_at)
    return deadline_at


@app.model("spin")
def spin(deadline_at: float) -> float:
    """20 ms of this thread's CPU time in bytecode: calls running at once share the core."""
    end = time.thread_time() + WORK_S
    while time.thread_time() < end:
        pass
    _record("spin", deadline_at)
    return deadline_at


@dataclass
class Stats:
    """Finished runs per model, those that finished after their caller's deadline, and by how much in all."""

    sleepy_runs: int
    sleepy_late: int
    sleepy_late_ms: float
    spin_runs: int
    spin_late: int
    spin_late_ms: float


@app.model("stats")
async def stats() -> Stats:
    """The counters since the server started."""
    with _lock:
        return Stats(
            _runs["sleepy"], _late["sleepy"], _late_ms["sleepy"], _runs["spin"], _late["spin"], _late_ms["spin"]
        )
