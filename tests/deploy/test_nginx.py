"""deploy/nginx/blazerpc.conf with the system's nginx (Debian's; CI installs it) in front of real replicas.

Every test includes the shipped server block, rendered by deploy/render.py (listen port
and replica addresses filled in), in a minimal main config of the test's own.
"""

from __future__ import annotations

import signal
import subprocess
import time

import grpc

from tests.deploy.cluster import (
    DRAIN_DELAY,
    Load,
    Nginx,
    Replica,
    assert_round_robin,
    render,
    replicas,
    rolling_restart_under_load,
)


def test_the_rendered_server_block_passes_nginx_t(workdir, nginx):
    server_block = workdir / "blazerpc.conf"
    server_block.write_text(render.nginx_config(listen_port=18080, replicas=[("127.0.0.1", 1), ("127.0.0.1", 2)]))
    main = workdir / "nginx.conf"
    main.write_text(f"pid {workdir}/nginx.pid;\nevents {{}}\nhttp {{ include {server_block}; }}\n")
    check = subprocess.run([nginx, "-t", "-p", str(workdir), "-c", str(main), "-e", str(workdir / "error.log")],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    rendered = server_block.read_text()
    assert "server 127.0.0.1:1 max_fails=1 fail_timeout=2s;\n    server 127.0.0.1:2 max_fails=1 fail_timeout=2s;" \
        in rendered
    assert "listen 18080 http2;" in rendered
    shipped = render.NGINX_CONFIG.read_text()
    assert rendered.replace("18080", "8080").replace(
        "    server 127.0.0.1:1 max_fails=1 fail_timeout=2s;\n    server 127.0.0.1:2", "    server blazerpc:50051"
    ) == shipped


def test_calls_are_spread_over_every_replica_and_gzip_passes_both_ways(workdir, stubs, nginx):
    with replicas(3) as group, Nginx(workdir, group) as proxy:
        assert_round_robin(proxy.address, stubs)

        words = ["blazerpc"] * 2000
        with grpc.insecure_channel(proxy.address) as channel:
            stub = stubs.pb2_grpc.InferenceServiceStub(channel)
            reply = stub.PredictText(stubs.pb2.TextRequest(words=words, repeat=10), timeout=10,
                                     compression=grpc.Compression.Gzip)
        assert reply.result == " ".join(words) * 10  # 179,990 characters
        deadline = time.monotonic() + 5
        while len(proxy.access_log()) < 301 and time.monotonic() < deadline:
            time.sleep(0.05)
        status, _, sent_down, sent_up, received_up = proxy.access_log()[-1]
        assert status == "200"
        assert int(sent_up) < 2000, sent_up  # 18,000 bytes of words, gzipped on the way to the replica
        assert int(received_up) < 5000 and int(sent_down) < 5000, (received_up, sent_down)  # and the text back


def test_a_rolling_restart_of_every_replica_loses_no_call(workdir, stubs, nginx):
    with replicas(3) as group, Nginx(workdir, group) as proxy:
        codes, report = rolling_restart_under_load(proxy.address, stubs, group, proxy)
        assert codes == [0, 0, 0]
        assert not report.failed, report.summary()
        assert {"r1.2", "r2.2", "r3.2"} <= set(report.by_replica()), report.by_replica()


def test_a_replica_stopping_under_load_loses_no_call(workdir, stubs, nginx):
    """The issue's scenario: 2 replicas, 2,000 calls at 200/s, one replica gets SIGTERM (401 failed before)."""
    with replicas(2) as (stopping, staying), Nginx(workdir, [stopping, staying]) as proxy:
        with Load(proxy.address, stubs, rate=200, count=2000, sleep_ms=20) as load:
            time.sleep(3)
            stopping.signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert stopping.wait(30) == 0
            report = load.join()
        assert not report.failed, report.summary()
        counts = report.by_replica()
        assert counts["r1.1"] >= 500 and counts["r2.1"] >= 1000, counts
        # nginx kept sending to the draining replica until it stopped listening, and it served them all.
        late = [o for o in report.outcomes if o.replica == "r1.1" and o.sent_at > signalled + 0.5]
        assert late and max(o.sent_at for o in late) < signalled + DRAIN_DELAY + 0.5
        assert "draining: still accepting calls" in stopping.output()


def test_a_replica_killed_mid_call_fails_only_the_calls_it_held(workdir, stubs, nginx):
    """nginx never resends a gRPC call it has started sending: a killed replica's calls fail, no later one does."""
    with replicas(3) as group, Nginx(workdir, group) as proxy:
        victim: Replica = group[0]
        with Load(proxy.address, stubs, rate=200, count=800, sleep_ms=100) as load:
            time.sleep(1.5)
            killed = time.monotonic()
            victim.signal(signal.SIGKILL)
            assert victim.wait(10) == -signal.SIGKILL
            report = load.join()
        failed = report.failed
        assert {o.code for o in failed} <= {"UNAVAILABLE"}, report.summary()
        # 200 calls/s of 100 ms, a third of them on the victim: about 7 were running there.
        assert len(failed) <= 15, report.summary()
        # Only calls sent just before the kill (running there) or at it (nginx had not yet seen
        # its connections close) fail; nginx sends every later call to the other replicas.
        assert all(killed - 0.3 < o.sent_at < killed + 0.5 for o in failed), report.summary()
        assert set(report.by_replica()) == {"r1.1", "r2.1", "r3.1"}
