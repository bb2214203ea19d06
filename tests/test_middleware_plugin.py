"""A third-party middleware plugin, pip-installed as its own distribution and found by entry point."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

from blazerpc_core.cli import make_cli
from blazerpc_core.testing import Connection
from tests.apps import add_app

FIXTURE = Path(__file__).parent / "fixtures" / "blazerpc-stamp-middleware"
MODULE = "blazerpc_stamp_middleware"
TIMEOUT = 10


@pytest.fixture(scope="module")
def stamp_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The fixture distribution, really installed (wheel, dist-info, entry points) for this module only."""
    root = tmp_path_factory.mktemp("stamp")
    source = root / "src"
    # Build from a copy, so the build leaves nothing behind in the repository.
    shutil.copytree(FIXTURE, source)
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(site), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    assert list(site.glob("blazerpc_stamp_middleware-*.dist-info"))
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        importlib.invalidate_caches()
        yield site
    sys.modules.pop(MODULE, None)
    importlib.invalidate_caches()


def call(conn: Connection, *metadata: tuple[str, str]) -> Any:
    return conn.stub.PredictAdd.with_call(conn.pb2.AddRequest(a=1, b=2), metadata=metadata, timeout=TIMEOUT)


def test_installed_middleware_wraps_calls(stamp_installed: Path, blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    conn = blazerpc_connect(blazerpc_serve(add_app(), extra={"stamp_text": "hello"}))
    response, rpc = call(conn)
    assert response.result == 3
    trailers = dict(rpc.trailing_metadata())
    assert trailers["x-stamp"] == "hello:add@1"
    assert "x-request-id" in trailers  # built-ins still run around it
    with pytest.raises(grpc.RpcError) as info:
        call(conn, ("x-stamp-deny", "1"))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert info.value.details() == "the stamp plugin refused this call"


def test_installed_middleware_can_be_disabled_by_name(
    stamp_installed: Path, blazerpc_serve: Any, blazerpc_connect: Any
) -> None:
    conn = blazerpc_connect(blazerpc_serve(add_app(), disabled=["stamp"]))
    _, rpc = call(conn, ("x-stamp-deny", "1"))
    assert "x-stamp" not in dict(rpc.trailing_metadata())


def test_installed_plugin_is_listed_and_adds_its_option(stamp_installed: Path) -> None:
    cli = make_cli()
    listing = CliRunner().invoke(cli, ["plugins"])
    assert listing.exit_code == 0, listing.output
    row = next(line for line in listing.output.splitlines() if line.startswith("stamp "))
    assert MODULE in row and "middleware" in row and "cli_options" in row
    for name in ("request-id", "access-log", "metrics", "auth", "rate-limit", "error-map"):
        assert any(line.startswith(f"{name} ") for line in listing.output.splitlines()), name
    help_text = CliRunner().invoke(cli, ["serve", "--help"]).output
    assert "--stamp-text" in help_text and "--auth-tokens-file" in help_text and "--rate-limit" in help_text
