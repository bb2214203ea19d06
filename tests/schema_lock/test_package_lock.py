"""A model package ships its lock as package data; a bare ``blazerpc serve`` (and ``proto``) picks it up."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import grpc

from blazerpc_core.sources import installed_models
from blazerpc_core.testing import compile_stubs, run_cli, serve_cli
from tests.schema_lock.sources import HEADER, SUB, SUB_INSERTED, write_app

PYPROJECT = textwrap.dedent("""
    [build-system]
    requires = ["setuptools>=68"]
    build-backend = "setuptools.build_meta"

    [project]
    name = "tinylock-models"
    version = "0.1.0"

    [project.entry-points."blazerpc.models"]
    tinylock = "tinylock_models:app"

    [tool.setuptools]
    packages = ["tinylock_models"]

    [tool.setuptools.package-data]
    tinylock_models = ["blaze_service.lock"]
""")


def test_a_bare_serve_keeps_the_numbers_of_the_lock_a_package_ships(tmp_path):
    # Version 1 of the package is what clients were built from; its author locked it.
    first = write_app(tmp_path / "v1" / "app_v1.py", SUB)
    lock = tmp_path / "pkg" / "tinylock_models" / "blaze_service.lock"
    assert run_cli("proto", str(first), "--lock", str(lock), "-o", str(tmp_path / "v1")).returncode == 0
    old = compile_stubs((tmp_path / "v1" / "blaze_service.proto").read_text(), tmp_path / "old")
    # Version 2 inserts a parameter and ships the same lock.
    (tmp_path / "pkg" / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "pkg" / "tinylock_models" / "__init__.py").write_text(HEADER + textwrap.dedent(SUB_INSERTED))
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site),
         str(tmp_path / "pkg")],
        check=True, capture_output=True,
    )
    assert (site / "tinylock_models" / "blaze_service.lock").is_file()
    env = {"PYTHONPATH": str(site)}
    assert run_cli("proto", "-o", str(tmp_path / "v2"), env=env).returncode == 0
    assert "double offset = 3;" in (tmp_path / "v2" / "blaze_service.proto").read_text()
    with serve_cli(env=env) as server, grpc.insecure_channel(server.address) as channel:
        stub = old.pb2_grpc.InferenceServiceStub(channel)
        assert stub.PredictSub(old.pb2.SubRequest(a=10, b=3), timeout=10).result == 7


def test_the_example_package_ships_a_current_lock_that_installed_discovery_finds():
    package = Path(__file__).resolve().parents[2] / "examples" / "blazerpc-example-models" / "blazerpc_example_models"
    lock = package / "blaze_service.lock"
    done = run_cli("proto", f"{package / '__init__.py'}:app", "--check-against", str(lock))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BREAKING" not in done.stdout and "ok " not in done.stdout  # nothing changed since it was locked
    found = [item for item in installed_models() if item.source.endswith(":examples")]
    assert found and all(Path(item.lock or "").name == "blaze_service.lock" for item in found)
