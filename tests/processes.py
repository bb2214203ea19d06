"""Running ``blazerpc`` as a real subprocess in tests, bounded in time and always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from blazerpc_core.testing import free_port

BLAZERPC = [sys.executable, "-m", "blazerpc_core.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLAZERPC_")}
    env.update(extra)
    return env


@dataclass
class ServeProcess:
    process: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


@contextlib.contextmanager
def serve_process(
    args: Sequence[str], *, env: dict[str, str] | None = None, port: int | None = None, ready_timeout: float = 60
) -> Iterator[ServeProcess]:
    """``blazerpc serve ARGS --port P``; yields once the banner is printed, kills on exit."""
    port = port or free_port()
    process = subprocess.Popen(
        [*BLAZERPC, "serve", *args, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env or clean_env(),
    )
    running = ServeProcess(process, port)
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.lines.append(line)
            if "blazerpc serving" in line:
                ready.set()
        ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        if not ready.wait(ready_timeout) or process.poll() is not None:
            raise AssertionError(f"server did not start:\n{running.output()}")
        yield running
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)
        reader.join(5)
