"""deploy/kubernetes and deploy/kserve: valid against the Kubernetes API schemas, and consistent.

Validation uses the ``kubernetes-validate`` package (the API's published JSON schemas,
strict: an unknown field is an error). KServe's resources are custom resources that
package does not know: their structure and the fields that matter are checked here, and
their containers are validated as the Kubernetes containers they become.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
import yaml

from blazerpc_core.testing import free_port, serve_cli
from tests.deploy.cluster import APP, ROOT
from tests.deploy.dockerfile import Dockerfile

KUBERNETES = ROOT / "deploy" / "kubernetes"
KSERVE = ROOT / "deploy" / "kserve"
#: The oldest version the manifests support (native gRPC probes are GA in 1.27) and the newest known.
VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]


def _documents(directory: Path) -> dict[str, dict[str, Any]]:
    """Every document of every YAML file, keyed ``Kind/name``."""
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[f"{doc['kind']}/{doc['metadata']['name'] if 'metadata' in doc else path.name}"] = doc
    return docs


MANIFESTS = {k: v for k, v in _documents(KUBERNETES).items() if not k.startswith("Kustomization/")}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def _option(container: dict[str, Any], name: str) -> str | None:
    """A serve option's value: from ``--name=value`` / ``--name value`` args, else its BLAZERPC_* variable."""
    args = [*container.get("command", []), *container.get("args", [])]
    for i, arg in enumerate(args):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
    return _env(container).get("BLAZERPC_" + name.upper().replace("-", "_"))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_every_manifest_is_valid_for_the_kubernetes_api(name, version):
    kubernetes_validate.validate(MANIFESTS[name], version, strict=True)


def test_the_deployment_drains_within_its_grace_and_probes_the_health_service():
    deployment = MANIFESTS["Deployment/blazerpc"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    drain, grace = float(_option(container, "drain-delay")), float(_option(container, "grace-period"))
    assert pod["terminationGracePeriodSeconds"] >= drain + grace + 5
    assert "lifecycle" not in container  # no preStop: the drain delay is the server's own
    port = int(_option(container, "port"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == port and ports["metrics"] == int(_option(container, "metrics-port"))
    assert _option(container, "host") == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": port}, probe  # service "": the whole server
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > drain + grace  # never kills a drain
    readiness = container["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= drain  # unready before it stops accepting
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    image = Dockerfile.parse((ROOT / "deploy" / "Dockerfile").read_text())
    assert pod["securityContext"]["runAsUser"] == int(image.final("USER")[0].args.split(":")[0])
    assert image.env()["BLAZERPC_PORT"] == str(port)


def test_labels_selectors_and_references_match():
    deployment = MANIFESTS["Deployment/blazerpc"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = MANIFESTS["Service/blazerpc"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["clusterIP"] == "None"  # headless: per-call balancing by the client or proxy
    container_ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    assert MANIFESTS["PodDisruptionBudget/blazerpc"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = MANIFESTS["HorizontalPodAutoscaler/blazerpc"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml", "prometheus-adapter.yaml"}


def test_the_autoscaler_metric_is_one_the_server_exports_and_the_adapter_serves():
    hpa = MANIFESTS["HorizontalPodAutoscaler/blazerpc"]
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    rules = yaml.safe_load(MANIFESTS["ConfigMap/adapter-config"]["data"]["config.yaml"])["rules"]
    (rule,) = [r for r in rules if r["name"]["as"] == name]
    assert rule["seriesQuery"].startswith(f"{name}{{")
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    metrics_port = free_port()
    with serve_cli(APP, "--metrics-port", str(metrics_port)) as server, \
            grpc.insecure_channel(server.address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as page:
            exported = page.read().decode()
    assert f"# TYPE {name} gauge" in exported, exported[:2000]


# -- KServe ---------------------------------------------------------------------------------------

KSERVE_DOCS = _documents(KSERVE)  # shipped: a missing deploy/kserve/ fails these tests


def _runtime() -> dict[str, Any]:
    (runtime,) = [d for d in KSERVE_DOCS.values() if d["kind"] == "ServingRuntime"]
    return runtime


def _inference_service() -> dict[str, Any]:
    (service,) = [d for d in KSERVE_DOCS.values() if d["kind"] == "InferenceService"]
    return service


def test_the_kserve_runtime_serves_the_open_inference_protocol_over_grpc():
    runtime = _runtime()
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    spec = runtime["spec"]
    assert set(spec) <= {"annotations", "supportedModelFormats", "protocolVersions", "multiModel", "containers",
                         "disabled", "grpcEndpoint", "grpcDataEndpoint", "replicas", "storageHelper",
                         "builtInAdapter", "nodeSelector", "affinity", "tolerations", "labels", "volumes",
                         "imagePullSecrets", "hostIPC", "workerSpec", "httpDataEndpoint"}, set(spec)
    assert spec["protocolVersions"] == ["grpc-v2"]
    assert spec["supportedModelFormats"] and all("name" in f for f in spec["supportedModelFormats"])
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"
    port = int(_option(container, "port"))
    (grpc_port,) = [p for p in container["ports"] if p["name"] == "h2c"]  # KServe's name for a gRPC port
    assert grpc_port["containerPort"] == port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port, probe
    assert _option(container, "model-repository") == "/mnt/models"  # where KServe puts storageUri
    assert _option(container, "host") == "0.0.0.0"
    # The container as the Pod KServe makes of it, against the Kubernetes schema.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "runtime"}, "spec": {"containers": [container]}}
    kubernetes_validate.validate(pod, VERSIONS[-1], strict=True)


def test_the_inference_service_uses_the_runtime_and_drains_within_its_grace():
    runtime, service = _runtime(), _inference_service()
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    assert model["storageUri"]
    (container,) = runtime["spec"]["containers"]
    drain, grace = float(_option(container, "drain-delay") or 0), float(_option(container, "grace-period") or 10)
    assert predictor.get("terminationGracePeriodSeconds", 30) >= drain + grace
    readiness = container["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= drain
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"},
           "spec": {"containers": [{"name": "kserve-container", "image": "x", "resources": model["resources"]}]}}
    kubernetes_validate.validate(pod, VERSIONS[-1], strict=True)


def test_the_runtime_command_line_serves_a_model_repository_over_the_open_inference_protocol(tmp_path):
    """The runtime's own command and args (addresses and the repository path swapped) serve v2 over gRPC."""
    (container,) = _runtime()["spec"]["containers"]
    repository = tmp_path / "models"
    repository.mkdir()
    (repository / "classify.py").write_text(Path(APP).read_text())
    port, metrics = free_port(), free_port()
    swap = {"--host": "127.0.0.1", "--port": str(port), "--metrics-port": str(metrics),
            "--model-repository": str(repository), "--drain-delay": "0"}
    args = []
    for arg in container["args"]:
        name = arg.split("=", 1)[0]
        args.append(f"{name}={swap[name]}" if name in swap and "=" in arg else arg)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLAZERPC_")}
    env.update(_env(container), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    server = subprocess.Popen([*container["command"], *args], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            ready = channel.unary_unary("/inference.GRPCInferenceService/ServerReady")
            model_ready = channel.unary_unary("/inference.GRPCInferenceService/ModelReady")
            deadline = time.monotonic() + 60
            while True:
                try:
                    if ready(b"", timeout=2) == b"\x08\x01":  # ServerReadyResponse{ready: true}
                        break
                except grpc.RpcError:
                    pass
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            assert model_ready(b"\x0a\x04echo", timeout=5) == b"\x08\x01"  # ModelReadyRequest{name: "echo"}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            assert server.wait(30) == 0
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)
