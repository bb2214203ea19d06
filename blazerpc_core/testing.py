"""Opt-in pytest plugin for testing models and plugins against a real server.

Enable it with ``pytest_plugins = ["blazerpc_core.testing"]`` in a ``conftest.py``.

* ``blazerpc_serve(app_or_models, **settings)`` starts a real server on a free port of
  127.0.0.1 (in a background thread with its own event loop) and returns a
  :class:`RunningServer`; it is drained and stopped when the test ends.
* ``blazerpc_stubs(server)`` compiles the server's exported ``.proto`` with
  ``grpc_tools.protoc`` and imports the grpcio modules; each compiled module gets its own
  descriptor pool, so many schemas (all named ``blaze_service.proto``) coexist in one
  test process.

Plain helpers for the same tests:

* :func:`tensor_proto` and :func:`array_from_proto` build and read ``TensorProto``
  messages with numpy alone, independently of the server's codec.
* :func:`run_cli`, :func:`cli_stubs` and :func:`serve_cli` run the ``blazerpc`` command
  line as a real subprocess, the way an operator would (see :class:`ServeProcess`).
* :class:`BatchRecorder` is a plugin that records batch events, so batching tests wait for
  the queue they need instead of sleeping.

grpcio and its health client come with the core's ``test`` extra, not with the core, so
they are imported inside the helpers that use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blazerpc_core.discovery import specs_of
from blazerpc_core.hookspecs import hookimpl
from blazerpc_core.plugins import make_plugin_manager
from blazerpc_core.registry import ModelRegistry
from blazerpc_core.schema.builder import FILE_NAME
from blazerpc_core.server.serve import BlazeServer
from blazerpc_core.settings import ServeSettings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningServer:
    """A :class:`BlazeServer` serving from a background thread."""

    def __init__(self, server: BlazeServer) -> None:
        self.server = server
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._done: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="blazerpc-test-server", daemon=True)

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def proto_text(self) -> str:
        return self.server.context.schema.proto_text()

    def start(self) -> RunningServer:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._done.wait()

    def stop(self, grace_period: float | None = None) -> None:
        """Drain and close; idempotent."""
        if self._loop is None or not self._thread.is_alive():
            return

        async def stop() -> None:
            await self.server.stop(grace_period)
            assert self._done is not None
            self._done.set()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(120)
        self._thread.join(30)


def start_server(
    models: Any,
    *,
    plugins: Sequence[Any] = (),
    load_entry_points: bool = True,
    disabled: Sequence[str] = (),
    **settings: Any,
) -> RunningServer:
    """Build and start a server for ``models`` (an app, a model, or a list of them)."""
    specs, app_plugins = specs_of(models)
    pm = make_plugin_manager(plugins=[*app_plugins, *plugins], load_entry_points=load_entry_points,
                             disabled=disabled)
    registry = ModelRegistry()
    for spec in specs:
        registry.register(spec)
    pm.hook.blazerpc_register_models(register=registry.register)
    serve_settings = ServeSettings(**{"host": "127.0.0.1", "port": 0, **settings})
    return RunningServer(BlazeServer(registry, settings=serve_settings, plugin_manager=pm)).start()


@dataclass
class Stubs:
    """grpcio modules compiled from an exported .proto."""

    pb2: types.ModuleType
    pb2_grpc: types.ModuleType


def compile_stubs(proto_text: str, directory: Path | None = None) -> Stubs:
    """Compile ``proto_text`` with grpc_tools.protoc and import it with a private pool."""
    directory = Path(directory or tempfile.mkdtemp(prefix="blazerpc-stubs-"))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / FILE_NAME).write_text(proto_text)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{directory}", f"--python_out={directory}",
         f"--grpc_python_out={directory}", str(directory / FILE_NAME)],
        check=True, capture_output=True,
    )
    stem = FILE_NAME.removesuffix(".proto")
    tag = f"_blazerpc_stub_{abs(hash(str(directory)))}"
    pb2_path = directory / f"{stem}_pb2.py"
    pb2_path.write_text(
        pb2_path.read_text().replace("_descriptor_pool.Default()", "_descriptor_pool.DescriptorPool()")
    )
    pb2 = _import(f"{tag}_pb2", pb2_path)
    grpc_path = directory / f"{stem}_pb2_grpc.py"
    grpc_path.write_text(grpc_path.read_text().replace(f"import {stem}_pb2 as", f"import {tag}_pb2 as"))
    return Stubs(pb2=pb2, pb2_grpc=_import(f"{tag}_pb2_grpc", grpc_path))


def _import(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --- tensors --------------------------------------------------------------------------


def tensor_proto(pb2: Any, array: Any) -> Any:
    """A ``pb2.TensorProto`` holding ``array`` (anything ``numpy.asarray`` takes).

    ``pb2`` is a compiled stubs module (``Stubs.pb2``). The encoding uses numpy alone, not
    the server's codec, so a test checks the codec against an independent implementation.
    """
    array = np.ascontiguousarray(array)
    return pb2.TensorProto(shape=list(array.shape), dtype=array.dtype.name, data=array.tobytes())


def array_from_proto(message: Any) -> np.ndarray[Any, Any]:
    """The read-only numpy array a ``TensorProto`` holds (it shares the message's bytes).

    ``bfloat16`` has no numpy dtype; it decodes with ``ml_dtypes``, which must be installed
    (TensorFlow and JAX depend on it).
    """
    if message.dtype == "bfloat16":
        import ml_dtypes

        dtype = np.dtype(ml_dtypes.bfloat16)
    else:
        dtype = np.dtype(message.dtype)
    return np.frombuffer(message.data, dtype=dtype).reshape(list(message.shape))


# --- the command line as a subprocess -------------------------------------------------

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


# --- batching -------------------------------------------------------------------------


class BatchRecorder:
    """A plugin that records the server's batch events: ``blazerpc_serve(app, plugins=[recorder])``.

    ``dispatched`` holds ``(model, rows, requests)`` per batch handed to a model, ``depth``
    the latest number of queued rows per model, ``waits`` ``(model, seconds)`` per request
    that left a queue. Tests wait on these (:meth:`wait_depth`, :meth:`wait_for`) rather
    than sleep.

    With ``expected``, :attr:`gate` is set once that many rows have been dispatched or are
    queued. A model that waits on it in its first call keeps the batcher busy until every
    other request is queued, so how the rest is batched does not depend on timing.
    """

    __name__ = "batch-recorder"

    def __init__(self, expected: int | None = None, *, timeout: float = 30.0) -> None:
        self.expected = expected
        self.timeout = timeout
        self.dispatched: list[tuple[str, int, int]] = []
        self.depth: dict[str, int] = {}
        self.waits: list[tuple[str, float]] = []
        self.gate = threading.Event()
        self._cond = threading.Condition()

    @property
    def batches(self) -> list[tuple[int, int]]:
        """``(rows, requests)`` per dispatched batch, of every model."""
        with self._cond:
            return [(rows, requests) for _, rows, requests in self.dispatched]

    @hookimpl
    def blazerpc_startup(self, context: Any) -> None:
        context.batch_events.subscribe(self)

    def batch_dispatched(self, spec: Any, rows: int, requests: int) -> None:
        with self._cond:
            self.dispatched.append((spec.name, rows, requests))
            self._cond.notify_all()

    def queue_wait(self, spec: Any, seconds: float) -> None:
        with self._cond:
            self.waits.append((spec.name, seconds))

    def queue_depth(self, spec: Any, rows: int) -> None:
        with self._cond:
            self.depth[spec.name] = rows
            done = sum(r for _, r, _ in self.dispatched)
            if self.expected is not None and done + rows >= self.expected:
                self.gate.set()
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        """Block until ``predicate()`` holds (checked after every event); fail naming ``what``."""
        with self._cond:
            if not self._cond.wait_for(predicate, self.timeout):
                raise AssertionError(f"timed out waiting for {what}: depth={self.depth} dispatched={self.dispatched}")

    def wait_depth(self, model: str, rows: int) -> None:
        """Block until ``rows`` rows of ``model`` are queued."""
        self.wait_for(lambda: self.depth.get(model) == rows, f"{rows} queued rows of {model}")


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture
def blazerpc_serve() -> Iterator[Callable[..., RunningServer]]:
    """Factory fixture: ``blazerpc_serve(app, **settings)`` → a running server, stopped after the test."""
    started: list[RunningServer] = []

    def serve(models: Any, **options: Any) -> RunningServer:
        server = start_server(models, **options)
        started.append(server)
        return server

    yield serve
    for server in started:
        server.stop(grace_period=5)


@pytest.fixture
def blazerpc_stubs(tmp_path: Path) -> Callable[[RunningServer], Stubs]:
    """Factory fixture: grpcio stubs compiled from a running server's exported .proto."""
    counter = iter(range(1_000_000))

    def stubs(server: RunningServer) -> Stubs:
        return compile_stubs(server.proto_text, tmp_path / f"stubs{next(counter)}")

    return stubs
