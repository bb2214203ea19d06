"""A server of every test model, shared by the package, and tritonclient clients to it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import tritonclient.grpc as grpcclient

from blazerpc_core.testing import RunningServer, start_server
from tests.open_inference.models import RECORDER, app, bf16_app


@pytest.fixture(scope="package")
def server() -> Iterator[RunningServer]:
    running = start_server([app, bf16_app], plugins=[RECORDER], load_entry_points=False)
    yield running
    running.stop(grace_period=5)


@pytest.fixture(scope="package")
def client(server: RunningServer) -> Iterator[Any]:
    triton = grpcclient.InferenceServerClient(server.address)
    yield triton
    triton.close()
