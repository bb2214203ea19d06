"""``blazerpc serve --workers N``: real processes on one port, SIGTERM, restarts."""

from __future__ import annotations

import os
import re
import runpy
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from blazerpc_core.build import assemble
from blazerpc_core.schema.proto_text import render_proto
from blazerpc_core.testing import compile_stubs, free_port, run_cli, serve_cli

APP = '''
import os

from blazerpc_core import BlazeApp

app = BlazeApp()


@app.model("pid")
def pid(x: int) -> int:
    """Which worker answered."""
    return os.getpid() + 0 * x
'''
STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")
WAIT = 60.0


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "pid_app.py"
    path.write_text(APP)
    return path


def stubs_for(target: Path, tmp_path: Path) -> Any:
    app = runpy.run_path(str(target))["app"]
    return compile_stubs(render_proto(assemble(app).schema().file), tmp_path / "stubs")


def ask_pid(stubs: Any, address: str) -> int | None:
    """One call on a fresh connection (so the kernel picks a worker anew); None when refused."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(address, options=options) as channel:
        try:
            reply = stubs.pb2_grpc.InferenceServiceStub(channel).PredictPid(stubs.pb2.PidRequest(x=1), timeout=5)
        except grpc.RpcError:
            return None
    return int(reply.result)


def workers(lines: list[str]) -> dict[int, int]:
    """Worker number → its latest pid, from the supervisor's log."""
    found: dict[int, int] = {}
    for line in list(lines):
        match = STARTED.search(line)
        if match:
            found[int(match[1])] = int(match[2])
    return found


def until(condition: Any, what: str, output: Any) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{output()}")


def test_two_workers_share_the_port_and_stop_cleanly_on_sigterm(target, tmp_path):
    stubs = stubs_for(target, tmp_path)
    with serve_cli(str(target), "--workers", "2", "--grace-period", "5") as server:
        pids = until(lambda: len(workers(server.lines)) == 2 and workers(server.lines), "two workers", server.output)
        seen: set[int] = set()

        def both_answer() -> bool:
            pid = ask_pid(stubs, server.address)
            if pid is not None:
                seen.add(pid)
            return seen == set(pids.values())

        until(both_answer, "answers from both workers", server.output)
        assert server.stop(signal.SIGTERM, timeout=WAIT) == 0, server.output()
    assert "all workers stopped" in server.output()


def test_a_killed_worker_is_restarted(target, tmp_path):
    stubs = stubs_for(target, tmp_path)
    with serve_cli(str(target), "--workers", "2", "--grace-period", "5") as server:
        before = until(lambda: len(workers(server.lines)) == 2 and workers(server.lines), "two workers", server.output)
        until(lambda: ask_pid(stubs, server.address), "a first answer", server.output)
        victim = before[1]
        os.kill(victim, signal.SIGKILL)
        after = until(
            lambda: workers(server.lines).get(1, victim) != victim and workers(server.lines), "a restart", server.output
        )
        assert after[2] == before[2]
        until(lambda: ask_pid(stubs, server.address) == after[1], "an answer from the new worker", server.output)
        assert server.stop(signal.SIGTERM, timeout=WAIT) == 0, server.output()
    assert re.search(r"worker 1 \(pid \d+\) exited with signal 9; restarting", server.output())


def test_workers_need_a_fixed_port(target):
    done = run_cli("serve", str(target), "--workers", "2", "--port", "0", timeout=WAIT)
    assert done.returncode != 0
    assert "--workers needs a fixed --port" in done.stderr


def test_a_worker_that_keeps_crashing_at_startup_makes_the_supervisor_give_up(tmp_path):
    # Imports fine in the supervisor (which resolves targets once before forking), fails in every worker.
    broken = tmp_path / "broken_app.py"
    broken.write_text(
        "import os\nfrom blazerpc_core import BlazeApp\napp = BlazeApp()\n"
        "@app.model('add')\ndef add(a: float, b: float) -> float:\n    return a + b\n"
        "if os.environ.get('BLAZERPC_WORKER_ID'):\n    raise RuntimeError('cannot load weights')\n"
    )
    done = run_cli("serve", str(broken), "--workers", "2", "--port", str(free_port()), timeout=120)
    assert done.returncode == 1
    assert "cannot load weights" in done.stderr
    assert re.search(r"worker \d exited with code 1 5 times within 10s of starting; giving up", done.stderr)
