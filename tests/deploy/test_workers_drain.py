"""``blazerpc serve --workers N`` drains as one server does: SIGTERM to the supervisor loses no call."""

from __future__ import annotations

import signal
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blazerpc_core.server.calls import REFUSED
from blazerpc_core.testing import serve_cli
from tests.deploy.cluster import APP


def test_sigterm_to_the_supervisor_finishes_every_call_in_flight_on_every_worker(stubs):
    pb2 = stubs.pb2
    args = ("--workers", "2", "--drain-delay", "1", "--grace-period", "10")
    with serve_cli(APP, *args, env={"DEPLOY_TEST_REPLICA": "w"}) as server:
        # One connection per channel (no shared subchannels); the kernel spreads connections
        # over the workers (SO_REUSEPORT) once both listen, so open them until each has three.
        by_worker: dict[int, list] = {}
        deadline = time.monotonic() + 60
        while len(by_worker) < 2 or min(len(c) for c in by_worker.values()) < 3:
            assert time.monotonic() < deadline, f"connections reached only workers {sorted(by_worker)}"
            channel = grpc.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1),
                                                                     ("grpc.enable_retries", 0)])
            stub = stubs.pb2_grpc.InferenceServiceStub(channel)
            try:
                pid = stub.PredictEcho(pb2.EchoRequest(x=0), timeout=10).pid
            except grpc.RpcError as exc:
                # The kernel hands connections to a worker once it listens, which is before its
                # models are loaded; until then it refuses calls, as a single server does.
                assert (exc.code(), exc.details()) == (grpc.StatusCode.UNAVAILABLE, REFUSED), exc
                channel.close()
                time.sleep(0.05)
                continue
            if len(by_worker.setdefault(pid, [])) < 3:
                by_worker[pid].append((channel, stub))
            else:
                channel.close()
                time.sleep(0.05)  # the other worker may still be starting
        channels = [c for conns in by_worker.values() for c in conns]
        pids = list(by_worker)
        try:
            inflight = [stub.PredictEcho.future(pb2.EchoRequest(x=i, sleep_ms=2500), timeout=30)
                        for i, (_, stub) in enumerate(channels)]
            time.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            # Draining: health says NOT_SERVING at once, and calls are still taken for --drain-delay.
            channel, stub = channels[0]
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            late = [s.PredictEcho(pb2.EchoRequest(x=100 + i), timeout=10) for i, (_, s) in enumerate(channels)]
            assert [r.x for r in late] == [100 + i for i in range(len(channels))]
            replies = [f.result() for f in inflight]  # raises if any call was lost
            assert [r.x for r in replies] == list(range(len(channels)))
            assert {r.pid for r in replies} == set(pids)
            assert server.process.wait(30) == 0
        finally:
            for channel, _ in channels:
                channel.close()
    output = server.output()
    assert output.count("draining: still accepting calls") == 2, output
    assert "all workers stopped" in output and "not all cleanly" not in output, output
