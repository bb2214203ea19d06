"""Fixtures of the deploy tests: stubs of the replicas' app, and the proxies' binaries."""

from __future__ import annotations

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
    """The nginx binary (nox's deploy session installs it): without it the nginx tests fail, never skip."""
    binary = nginx_binary()
    if binary is None:
        pytest.fail("nginx is not installed: `nox -s deploy` installs it with apt-get (or: apt-get install nginx)")
    return binary


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
