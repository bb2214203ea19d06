"""Opt-in pytest plugin for testing models and plugins against a real server.

Enable it with ``pytest_plugins = ["blazerpc_core.testing"]`` in a ``conftest.py``.

* ``blazerpc_serve(app_or_models, **settings)`` starts a real server on a free port of
  127.0.0.1 (in a background thread with its own event loop) and returns a
  :class:`RunningServer`; it is drained and stopped when the test ends.
* ``blazerpc_stubs(server)`` compiles the server's exported ``.proto`` with
  ``grpc_tools.protoc`` and imports the grpcio modules.
* ``blazerpc_connect(server)`` gives a connected grpcio stub of the inference service
  and its messages (``pb2``), closed when the test ends.

Helpers for the rest of a plugin's tests, one concern per module: servers
(:func:`start_server`, :func:`free_port`), stubs (:func:`compile_stubs`), tensors
(:func:`tensor_proto`, :func:`array_from_proto`), the command line as a subprocess
(:func:`run_cli`, :func:`cli_stubs`, :func:`serve_cli`) and batching
(:class:`BatchRecorder`). grpcio comes with the core's ``test`` extra, not with the core,
so it is imported inside the helpers that use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from blazerpc_core.testing.batching import BatchRecorder
from blazerpc_core.testing.cli import ServeProcess, cli_stubs, run_cli, serve_cli
from blazerpc_core.testing.servers import RunningServer, free_port, start_server
from blazerpc_core.testing.stubs import Stubs, compile_stubs, management_stubs
from blazerpc_core.testing.tensors import array_from_proto, tensor_proto

__all__ = [
    "BatchRecorder",
    "Connection",
    "RunningServer",
    "ServeProcess",
    "Stubs",
    "array_from_proto",
    "cli_stubs",
    "compile_stubs",
    "free_port",
    "management_stubs",
    "run_cli",
    "serve_cli",
    "start_server",
    "tensor_proto",
]


@dataclass
class Connection:
    """A grpcio channel to a test server, its inference stub and its messages."""

    channel: Any
    stub: Any
    pb2: Any
    stubs: Stubs


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


@pytest.fixture
def blazerpc_connect(tmp_path: Path) -> Iterator[Callable[..., Connection]]:
    """Factory fixture: ``blazerpc_connect(server, options=[...])`` → a :class:`Connection`, closed after the test."""
    import grpc

    opened: list[Any] = []
    counter = iter(range(1_000_000))

    def connect(server: RunningServer, options: Any = None) -> Connection:
        stubs = compile_stubs(server.proto_text, tmp_path / f"connect{next(counter)}")
        channel = grpc.insecure_channel(server.address, options=options)
        opened.append(channel)
        return Connection(channel, stubs.pb2_grpc.InferenceServiceStub(channel), stubs.pb2, stubs)

    yield connect
    for channel in opened:
        channel.close()
