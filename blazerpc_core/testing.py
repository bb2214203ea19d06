"""Opt-in pytest plugin for testing models and plugins against a real server.

Enable it with ``pytest_plugins = ["blazerpc_core.testing"]`` in a ``conftest.py``.

* ``blazerpc_serve(app_or_models, **settings)`` starts a real server on a free port of
  127.0.0.1 (in a background thread with its own event loop) and returns a
  :class:`RunningServer`; it is drained and stopped when the test ends.
* ``blazerpc_stubs(server)`` compiles the server's exported ``.proto`` with
  ``grpc_tools.protoc`` and imports the grpcio modules; each compiled module gets its own
  descriptor pool, so many schemas (all named ``blaze_service.proto``) coexist in one
  test process.
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import subprocess
import sys
import tempfile
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from blazerpc_core.discovery import specs_of
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

    def call_soon(self, coroutine: Callable[[], Any]) -> Any:
        """Run ``coroutine()`` on the server's loop and return its result (for tests)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine(), self._loop).result(60)

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
