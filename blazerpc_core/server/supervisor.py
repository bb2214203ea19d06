"""``blazerpc serve --workers N``: N server processes on one port under one supervisor.

The supervisor runs no server itself. It re-executes the same command line once per
worker (``python -m blazerpc_core.cli serve ...``) with ``BLAZERPC_WORKER_ID`` set to
the worker's number. A worker still sees ``--workers N``, so it binds the port with
SO_REUSEPORT and the kernel spreads connections over the workers; the environment
variable tells it to serve instead of supervising. Re-executing (rather than forking a
process that has already imported the models) keeps every worker a plain, fresh
``blazerpc serve``.

* SIGTERM / SIGINT are forwarded to every worker, which drains (``--grace-period``) and
  exits; the supervisor exits 0 once all of them exited 0. A second signal is forwarded
  too (workers then close at once); workers still alive ``grace_period + 10`` seconds
  after the first signal are killed.
* A worker that exits while the supervisor is not stopping is restarted, after a delay
  that doubles (0.1 s up to 5 s) while it keeps dying within 10 s of starting; after 5
  such quick exits in a row the supervisor gives up, stops the others and exits 1, so a
  broken target does not restart forever.
* Workers run in their own process group, so a terminal's Ctrl-C reaches them once
  (forwarded), not twice; on Linux they also get SIGTERM if the supervisor dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger("blazerpc.supervisor")

#: Set in a worker's environment to its number (1..N); a worker serves instead of supervising.
WORKER_ENV = "BLAZERPC_WORKER_ID"
_PR_SET_PDEATHSIG = 1


def worker_id() -> int | None:
    """This process's worker number when a supervisor started it, else None."""
    raw = os.environ.get(WORKER_ENV)
    return int(raw) if raw and raw.isdigit() else None


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_exits: int = 0
    restart_at: float | None = None
    exit_code: int | None = None


class Supervisor:
    """Starts, watches, restarts and stops worker processes; :meth:`run` returns the exit code."""

    def __init__(
        self,
        command: Sequence[str],
        workers: int,
        *,
        grace_period: float,
        env: Mapping[str, str] | None = None,
        quick_exit_window: float = 10.0,
        max_quick_exits: int = 5,
    ) -> None:
        self.command = list(command)
        self.workers = [_Worker(index=i) for i in range(1, workers + 1)]
        self.grace_period = grace_period
        self.env = dict(os.environ if env is None else env)
        self.quick_exit_window = quick_exit_window
        self.max_quick_exits = max_quick_exits
        self._signals: list[int] = []
        self._wakeup = threading.Event()
        self._stopping = False
        self._kill_at = 0.0
        self._gave_up = False
        self._preexec = _die_with_parent_hook()

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            log.info("supervisor (pid %d) starting %d workers", os.getpid(), len(self.workers))
            for worker in self.workers:
                self._spawn(worker)
            return self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._kill_all()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)
        self._wakeup.set()

    def _watch(self) -> int:
        while True:
            now = time.monotonic()
            while self._signals:
                self._begin_stop(self._signals.pop(0), now)
            for worker in self.workers:
                process = worker.process
                if process is not None and (code := process.poll()) is not None:
                    self._exited(worker, process, code, now)
                if (
                    worker.process is None and worker.restart_at is not None
                    and now >= worker.restart_at and not self._stopping
                ):
                    self._spawn(worker)
            if self._stopping:
                if all(w.process is None for w in self.workers):
                    clean = not self._gave_up and all(w.exit_code == 0 for w in self.workers)
                    log.info("all workers stopped%s", "" if clean else " (not all cleanly)")
                    return 0 if clean else 1
                if now >= self._kill_at:
                    log.warning("workers still running %.0fs after the stop signal; killing them",
                                self.grace_period + 10)
                    self._kill_all()
            self._wakeup.wait(0.05)
            self._wakeup.clear()

    def _spawn(self, worker: _Worker) -> None:
        env = dict(self.env, **{WORKER_ENV: str(worker.index)})
        worker.process = subprocess.Popen(
            self.command, env=env, start_new_session=True, preexec_fn=self._preexec
        )
        worker.started = time.monotonic()
        worker.restart_at = None
        worker.exit_code = None
        log.info("worker %d started (pid %d)", worker.index, worker.process.pid)

    def _exited(self, worker: _Worker, process: subprocess.Popen[bytes], code: int, now: float) -> None:
        worker.process = None
        worker.exit_code = code
        how = f"signal {-code}" if code < 0 else f"code {code}"
        if self._stopping:
            log.info("worker %d (pid %d) exited with %s", worker.index, process.pid, how)
            return
        quick = now - worker.started < self.quick_exit_window
        worker.quick_exits = worker.quick_exits + 1 if quick else 0
        if worker.quick_exits >= self.max_quick_exits:
            log.error("worker %d exited with %s %d times within %.0fs of starting; giving up",
                      worker.index, how, worker.quick_exits, self.quick_exit_window)
            self._gave_up = True
            self._begin_stop(signal.SIGTERM, now)
            return
        delay = min(0.1 * 2 ** max(worker.quick_exits - 1, 0), 5.0) if quick else 0.0
        log.warning("worker %d (pid %d) exited with %s; restarting in %.1fs",
                    worker.index, process.pid, how, delay)
        worker.restart_at = now + delay

    def _begin_stop(self, signum: int, now: float) -> None:
        if not self._stopping:
            self._stopping = True
            self._kill_at = now + self.grace_period + 10
            log.info("%s: stopping %d workers (grace period %.1fs)",
                     signal.Signals(signum).name, len(self.workers), self.grace_period)
        for worker in self.workers:
            worker.restart_at = None
            if worker.process is not None and worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signum)

    def _kill_all(self) -> None:
        for worker in self.workers:
            process = worker.process
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the worker if the supervisor dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            # The supervisor died between fork and prctl: nobody would ever stop us.
            os._exit(1)

    return hook


def supervise(argv: Sequence[str], workers: int, *, grace_period: float) -> int:
    """Run ``blazerpc <argv>`` as ``workers`` worker processes; returns the exit code.

    ``argv`` is the command line after the program name (``["serve", "app.py", ...]``).
    """
    command = [sys.executable, "-m", "blazerpc_core.cli", *argv]
    return Supervisor(command, workers, grace_period=grace_period).run()
