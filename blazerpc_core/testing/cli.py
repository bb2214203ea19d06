"""The ``blazerpc`` command line as a real subprocess, the way an operator runs it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from blazerpc_core.method import FILE_NAME
from blazerpc_core.testing.servers import free_port
from blazerpc_core.testing.stubs import Stubs, compile_stubs

_CLI = (sys.executable, "-m", "blazerpc_core.cli")
_BANNER = "blazerpc serving"


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    """This process's environment without its ``BLAZERPC_*`` variables, then ``env``.

    Settings exported in a developer's shell (``BLAZERPC_PORT``, ``BLAZERPC_DISABLE_PLUGINS``)
    would otherwise change the server under test; a test names the ones it means.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith("BLAZERPC_")}
    return {**base, **(env or {})}


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``blazerpc ARGS`` run to completion in a fresh interpreter; stdout and stderr captured as text.

    ``env`` adds variables to this process's environment, whose ``BLAZERPC_*`` ones are dropped.
    """
    return subprocess.run([*_CLI, *args], capture_output=True, text=True, timeout=timeout, env=_environment(env))


def cli_stubs(targets: Sequence[str], directory: Path, *, env: Mapping[str, str] | None = None) -> Stubs:
    """grpcio stubs for the schema ``blazerpc proto TARGET...`` writes, compiled under ``directory``.

    This is what a client of ``blazerpc serve TARGET...`` compiles; pass the same ``env``
    (``BLAZERPC_NAME``, ...) as to :func:`serve_cli`.
    """
    out = Path(directory) / "proto"
    done = run_cli("proto", *targets, "--output-dir", str(out), env=env)
    if done.returncode != 0:
        raise AssertionError(f"blazerpc proto {' '.join(targets)} exited with {done.returncode}:\n{done.stderr}")
    return compile_stubs((out / FILE_NAME).read_text(), Path(directory) / "stubs")


class ServeProcess:
    """A ``blazerpc serve`` subprocess started by :func:`serve_cli`.

    ``lines`` is everything it has printed so far, stdout and stderr interleaved (the
    banner, logs, the supervisor's worker lines). A background thread keeps appending, so
    let :meth:`stop` end the process rather than ``process.communicate()``.
    """

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="blazerpc-serve-output", daemon=True)
        self._reader.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        """What the process has printed so far; all of it once it has exited and :meth:`stop` returned."""
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` unless it already exited; return its exit code once its output is read."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def _wait_ready(self, deadline: float) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        # Short reconnect backoff: grpcio's default grows to seconds while the port is not bound yet.
        options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]
        request = health_pb2.HealthCheckRequest(service="")
        with grpc.insecure_channel(self.address, options=options) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            while self.process.poll() is None and time.monotonic() < deadline:
                serving = False
                with contextlib.suppress(grpc.RpcError):
                    serving = check(request, timeout=1).status == health_pb2.HealthCheckResponse.SERVING
                # The banner is printed just after health turns SERVING; wait for both, so that
                # output() names the models and the address when the test starts.
                if serving and any(_BANNER in line for line in list(self.lines)):
                    return
                time.sleep(0.05)
        if self.process.poll() is None:
            raise AssertionError(f"blazerpc serve on {self.address} was not ready in time:\n{self.output()}")
        self._reader.join(10)
        raise AssertionError(f"blazerpc serve exited with {self.process.returncode} before it was ready:\n"
                             f"{self.output()}")


@contextlib.contextmanager
def serve_cli(
    *args: str, env: Mapping[str, str] | None = None, port: int | None = None, startup_timeout: float = 120
) -> Iterator[ServeProcess]:
    """Run ``blazerpc serve ARGS --port P`` and yield it as a :class:`ServeProcess` once it is ready.

    Ready means the gRPC health service answers SERVING on ``127.0.0.1:P`` (plaintext) and
    the banner naming the models and the address has been printed. ``port`` defaults to a
    free one; ``env`` is as for :func:`run_cli`. On leaving the block a process still
    running gets SIGTERM (it drains and exits), and SIGKILL if it has not exited within a
    minute.
    """
    port = port or free_port()
    process = subprocess.Popen(
        [*_CLI, "serve", *args, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_environment(env),
    )
    running = ServeProcess(process, port)
    try:
        running._wait_ready(time.monotonic() + startup_timeout)
        yield running
    finally:
        try:
            running.stop(signal.SIGTERM)
        except subprocess.TimeoutExpired:
            running.stop(signal.SIGKILL, timeout=30)
