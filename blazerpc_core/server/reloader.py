"""``blazerpc serve --reload``: for development, restart the server whenever a TARGET's sources change.

The reloader runs the same command line (without ``--reload``) as a child process and
watches the TARGET files (and the ``.py`` files beside them) by modification time; on a
change it stops the child (SIGTERM, so it drains) and starts a new one. It imports
nothing of the user's code itself, so a syntax error only stops the child until the
next save.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

log = logging.getLogger("blazerpc.reload")
POLL_SECONDS = 0.5


def watched_files(targets: Iterable[str]) -> list[Path]:
    """The files whose change restarts the server: each file TARGET and the ``.py`` files of its directory."""
    files: set[Path] = set()
    for target in targets:
        where = Path(target.partition(":")[0])
        if where.is_file():
            files.add(where.resolve())
            files.update(p.resolve() for p in where.parent.glob("*.py"))
        elif where.is_dir():
            files.update(p.resolve() for p in where.rglob("*") if p.is_file())
    if not files:
        files.update(p.resolve() for p in Path(".").glob("*.py"))
    return sorted(files)


def _snapshot(files: Sequence[Path]) -> dict[Path, float]:
    stamps = {}
    for path in files:
        try:
            stamps[path] = path.stat().st_mtime
        except OSError:
            stamps[path] = -1.0
    return stamps


def run_with_reload(argv: Sequence[str], targets: Sequence[str]) -> int:
    """Run ``blazerpc <argv>`` without ``--reload``, restarting it when a watched file changes."""
    command = [sys.executable, "-m", "blazerpc_core.cli", *[a for a in argv if a != "--reload"]]
    env = {k: v for k, v in os.environ.items() if k != "BLAZERPC_RELOAD"}
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            files = watched_files(targets)
            stamps = _snapshot(files)
            child = subprocess.Popen(command, env=env)
            log.info("reloader: serving (pid %d), watching %d files", child.pid, len(files))
            changed = False
            while not stopping and not changed:
                time.sleep(POLL_SECONDS)
                changed = _snapshot(files) != stamps
                if child.poll() is not None and not changed:
                    # It exited (a syntax error, say): wait for the next change.
                    continue
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
            if stopping:
                return 0
            log.info("reloader: a source changed; restarting")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
