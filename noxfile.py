"""Sessions: tests (core), one per framework plugin, lint, typecheck, bench.

``nox`` with no arguments runs what CI runs. Each session installs what it needs into
its own virtualenv, so a fresh machine needs only Python and nox.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "torch", "tf", "onnx", "otel"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

TORCH = "torch==2.13.0"  # the CPU wheel; any other version pulls a multi-GB CUDA build
PYTEST = ["pytest", "-q", "-p", "no:cacheprovider"]


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over everything (in its own virtualenv, never the caller's environment)."""
    session.install("-q", "ruff")
    session.run("ruff", "check", ".")


#: Every plugin's package (plugins/*/blazerpc_*, not its egg-info).
PLUGIN_PACKAGES = sorted(str(p.parent) for p in Path("plugins").glob("*/blazerpc_*/__init__.py"))


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the core and every plugin package.

    No framework is installed here: plugins import theirs lazily and type their objects as
    ``Any`` (``ignore_missing_imports``), so they check the same with or without it.
    """
    session.install("-q", "-e", ".[test]", "mypy")
    session.run("mypy", "blazerpc_core", *PLUGIN_PACKAGES)


@nox.session
def tests(session: nox.Session) -> None:
    """The core's tests; no ML framework and no optional plugin is installed here."""
    session.install("-q", "-e", ".[test]")
    session.run(*PYTEST, "tests", *session.posargs)


def _plugin_session(session: nox.Session, name: str, *framework: str) -> None:
    session.install("-q", "-e", ".[test]", *framework)
    session.install("-q", "-e", f"plugins/blazerpc_{name}")
    session.run(*PYTEST, f"plugins/blazerpc_{name}/tests", *session.posargs)


@nox.session
def torch(session: nox.Session) -> None:
    """blazerpc-torch with torch only."""
    _plugin_session(session, "torch", TORCH)


@nox.session
def tf(session: nox.Session) -> None:
    """blazerpc-tf with tensorflow-cpu only."""
    _plugin_session(session, "tf", "tensorflow-cpu")


@nox.session
def onnx(session: nox.Session) -> None:
    """blazerpc-onnx with onnxruntime (and onnx to build test graphs)."""
    _plugin_session(session, "onnx", "onnxruntime", "onnx")


@nox.session
def otel(session: nox.Session) -> None:
    """blazerpc-otel (OpenTelemetry tracing), a middleware plugin installed on its own."""
    session.install("-q", "-e", ".[test]", "-e", "plugins/blazerpc_otel[test]")
    session.run(*PYTEST, "plugins/blazerpc_otel/tests", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite (not part of CI): writes benchmarks/results/*.json and prints tables."""
    session.install("-q", "-e", ".[test]", "onnxruntime", "onnx")
    session.install("-q", "-e", "plugins/blazerpc_onnx")
    session.run("python", "-m", "benchmarks.run_all", *session.posargs)
