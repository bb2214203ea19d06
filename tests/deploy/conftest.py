"""Fixtures of the deploy tests: stubs of the replicas' app, and the proxies' binaries."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from blazerpc_core.testing import cli_stubs
from tests.deploy.cluster import APP, nginx_binary


@pytest.fixture(scope="session")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """grpcio stubs of tests/deploy/replica_app.py, compiled from what `blazerpc proto` writes."""
    return cli_stubs([APP], tmp_path_factory.mktemp("deploy-stubs"))


@pytest.fixture(scope="session")
def nginx() -> str:
    """The nginx binary: CI installs it (.ci/run), so there a missing nginx fails instead of skipping."""
    binary = nginx_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed; .ci/run installs it with apt-get")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return binary


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
