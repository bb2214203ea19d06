"""deploy/Dockerfile and deploy/compose.yaml, tested without a container engine (there is none here).

What can be run is run: the image's entrypoint command line with the image's environment
serves the installed model packages, and its HEALTHCHECK command follows the server's
health (0 SERVING; 1 draining or gone). The rest is checked against the files it names.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from blazerpc_core.testing import free_port
from tests.deploy.cluster import ROOT, render
from tests.deploy.dockerfile import Dockerfile

DEPLOY = ROOT / "deploy"
DOCKERFILE = Dockerfile.parse((DEPLOY / "Dockerfile").read_text())
BIN = str(Path(sys.executable).parent)  # where `blazerpc` is installed, as in the image's PATH


def _seconds(text: str) -> float:
    return float(text.removesuffix("s"))


def test_the_image_is_slim_non_root_and_built_from_files_that_exist():
    args = DOCKERFILE.args()
    for instruction in DOCKERFILE.all("FROM"):
        assert instruction.args.startswith("python:${PYTHON_VERSION}-slim"), instruction.args
    assert args["PYTHON_VERSION"] == "3.11"
    (user,) = DOCKERFILE.final("USER")
    uid = user.args.split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can verify it
    assert any(f"--uid {uid}" in run.args for run in DOCKERFILE.final("RUN"))
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for copy in DOCKERFILE.all("COPY"):
        *sources, _ = copy.args.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert f"!{source}" in ignored, f"{source} is left out of the build context"
    models = ROOT / args["MODELS"]
    assert (models / "pyproject.toml").is_file(), models
    env = DOCKERFILE.env()
    assert env["BLAZERPC_HOST"] == "0.0.0.0"
    assert DOCKERFILE.final("EXPOSE")[0].args.split() == [env["BLAZERPC_PORT"], env["BLAZERPC_METRICS_PORT"]]
    assert DOCKERFILE.exec_form("ENTRYPOINT") == ["blazerpc", "serve"]
    assert DOCKERFILE.final("STOPSIGNAL")[0].args == "SIGTERM"
    options, command = DOCKERFILE.healthcheck()
    assert command.startswith("blazerpc health ")
    assert _seconds(options["timeout"]) > float(command.split("--timeout")[1].split()[0])


def test_the_build_steps_pip_command_builds_the_core_and_the_model_package(tmp_path):
    (build,) = [run.args for run in DOCKERFILE.all("RUN") if "pip wheel" in run.args]
    assert build.endswith(". ${MODELS}")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--wheel-dir",
         str(tmp_path), ".", DOCKERFILE.args()["MODELS"]],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    names = sorted(p.name.split("-")[0] for p in tmp_path.glob("*.whl"))
    assert names == ["blazerpc_core", "blazerpc_example_models"]


def _healthcheck(env: dict[str, str]) -> int:
    _, command = DOCKERFILE.healthcheck()
    return subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, timeout=30).returncode


def test_the_entrypoint_serves_and_the_healthcheck_follows_its_health(tmp_path):
    port, metrics = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLAZERPC_")}
    env.update(DOCKERFILE.env())
    # Loopback instead of the image's 0.0.0.0, free ports, and a drain delay as compose.yaml sets.
    env.update(BLAZERPC_HOST="127.0.0.1", BLAZERPC_PORT=str(port), BLAZERPC_METRICS_PORT=str(metrics),
               BLAZERPC_DRAIN_DELAY="2", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    assert _healthcheck(env) == 1  # nothing listens yet
    command = DOCKERFILE.exec_form("ENTRYPOINT") + DOCKERFILE.exec_form("CMD")
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while _healthcheck(env) != 0:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "never healthy"
            time.sleep(0.2)
        called = subprocess.run(["blazerpc", "call", f"127.0.0.1:{port}", "scale", "x=2"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert called.returncode == 0, called.stderr
        value = json.loads(called.stdout)
        assert (value["result"] if isinstance(value, dict) else value) == 6.0, value
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as page:
            assert b'blazerpc_requests_total{code="OK",model="scale",version="2"}' in page.read()
        server.send_signal(signal.SIGTERM)  # the image's STOPSIGNAL
        assert _healthcheck(env) == 1  # draining: NOT_SERVING while it still accepts calls
        assert server.wait(30) == 0
        assert _healthcheck(env) == 1
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert '"message": "draining: still accepting calls' in output or "draining: still accepting" in output, output


def test_compose_runs_three_replicas_of_the_image_behind_the_shipped_envoy():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    replicas, envoy = compose["services"]["blazerpc"], compose["services"]["envoy"]
    assert replicas["deploy"]["replicas"] == 3
    assert (DEPLOY / replicas["build"]["context"]).resolve() == ROOT
    assert (ROOT / replicas["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    deployment = yaml.safe_load((DEPLOY / "kubernetes" / "deployment.yaml").read_text())
    assert replicas["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    drain = float(replicas["environment"]["BLAZERPC_DRAIN_DELAY"])
    grace = float(replicas["environment"]["BLAZERPC_GRACE_PERIOD"])
    assert _seconds(replicas["stop_grace_period"]) > drain + grace
    assert envoy["depends_on"]["blazerpc"]["condition"] == "service_healthy"  # the image's HEALTHCHECK

    (volume,) = envoy["volumes"]
    source, target, _ = volume.split(":")
    assert (DEPLOY / source).resolve() == render.ENVOY_CONFIG
    assert envoy["command"][envoy["command"].index("-c") + 1] == target
    config = yaml.safe_load(render.ENVOY_CONFIG.read_text())
    (cluster,) = config["static_resources"]["clusters"]
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert address == {"address": "blazerpc", "port_value": int(DOCKERFILE.env()["BLAZERPC_PORT"])}
    assert cluster["type"] == "STRICT_DNS"  # the service name resolves to every replica
    listener_port = config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    assert f"{listener_port}:{listener_port}" in envoy["ports"]
    (check,) = cluster["health_checks"]
    assert drain > _seconds(check["interval"])
