"""Apps and server helpers shared by the client tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blazerpc_core import BlazeApp, InvalidArgument, TensorInput, TensorOutput, hookimpl
from blazerpc_core.client import RetryPolicy
from blazerpc_core.testing import RunningServer, free_port, start_server

TIMEOUT = 10.0
#: A retry policy whose first retry waits 3 s: a call that fails sooner than that was not retried.
SLOW_RETRY = RetryPolicy(initial_backoff=3.0, max_backoff=3.0)
NOT_RETRIED = 2.5


@dataclass
class Calls:
    """How often each model body ran, counted inside the model (thread-safe)."""

    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, name: str) -> None:
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + 1

    def __getitem__(self, name: str) -> int:
        with self.lock:
            return self.counts.get(name, 0)


def streaming_app(calls: Calls | None = None, tag: str = "server") -> BlazeApp:
    """Every call shape, sync and async, plus models that fail, stall or say who answered."""
    calls = calls if calls is not None else Calls()
    app = BlazeApp()

    @app.model("generate")
    def generate(prompt: str, n: int = 3) -> Iterator[str]:
        for i in range(n):
            yield f"{prompt}-{i}"

    @app.model("generate-async")
    async def generate_async(prompt: str, n: int = 3) -> AsyncIterator[str]:
        for i in range(n):
            await asyncio.sleep(0)
            yield f"{prompt}-{i}"

    @app.model("fail-midway")
    def fail_midway(n: int) -> Iterator[int]:
        calls.hit("fail-midway")
        yield from range(n)
        raise RuntimeError("ran out")

    @app.model("total")
    def total(values: Iterator[float]) -> float:
        return sum(values)

    @app.model("total-async")
    async def total_async(values: AsyncIterator[float]) -> float:
        return sum([v async for v in values])

    @app.model("echo")
    def echo(items: Iterator[str]) -> Iterator[str]:
        for item in items:
            yield item.upper()

    @app.model("running-mean")
    async def running_mean(xs: AsyncIterator[float]) -> AsyncIterator[float]:
        count, acc = 0, 0.0
        async for x in xs:
            count, acc = count + 1, acc + x
            yield acc / count

    @app.model("row-sums")
    def row_sums(rows: Iterator[TensorInput[np.float32, 3]]) -> Iterator[TensorOutput[np.float32, 1]]:
        for row in rows:
            yield np.asarray([row.sum()], dtype=np.float32)

    @app.model("explode")
    def explode(x: int) -> int:
        calls.hit("explode")
        raise RuntimeError(f"boom {x}")

    @app.model("refuse")
    def refuse(x: int) -> int:
        calls.hit("refuse")
        raise InvalidArgument(f"x={x} is not acceptable")

    @app.model("sleepy")
    async def sleepy(seconds: float) -> str:
        calls.hit("sleepy")
        await asyncio.sleep(seconds)
        return tag

    @app.model("whoami")
    def whoami(x: int) -> str:
        calls.hit("whoami")
        return tag

    @app.model("blob")
    def blob(size: int) -> bytes:
        return b"x" * size

    return app


class Warmup:
    """A startup hook that keeps its server NOT_SERVING (calls UNAVAILABLE) until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    @hookimpl
    async def blazerpc_startup(self, context: Any) -> None:
        while not self.release.is_set():
            await asyncio.sleep(0.01)


class WarmingServer:
    """A server whose startup is held by :class:`Warmup`: bound and answering health, but not serving."""

    def __init__(self, app: BlazeApp, **settings: Any) -> None:
        self.warmup = Warmup()
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._holder: list[RunningServer] = []
        self._thread = threading.Thread(
            target=lambda: self._holder.append(
                start_server(app, plugins=[self.warmup], port=self.port, **settings)),
            daemon=True,
        )
        self._thread.start()
        _wait_listening(self.port)

    def finish_warmup(self) -> RunningServer:
        self.warmup.release.set()
        self._thread.join(30)
        return self._holder[0]

    def stop(self) -> None:
        self.warmup.release.set()
        self._thread.join(30)
        for server in self._holder:
            server.stop(grace_period=2)


def _wait_listening(port: int, timeout: float = TIMEOUT) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.01)
    raise AssertionError(f"nothing listens on port {port}")


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
