"""Prometheus metrics after known traffic, scraped from ``/metrics`` over real HTTP."""

from __future__ import annotations

import random
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from blazerpc_core import BlazeApp, hookimpl
from blazerpc_core.context import ServerContext
from blazerpc_core.errors import StartupError
from blazerpc_core.testing import free_port, serve_cli
from tests.apps import add_app

TIMEOUT = 10


def fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as response:
        return str(response.read().decode())


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` as {(sample name, sorted labels): value}."""
    text = fetch(port)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


def make_app() -> BlazeApp:
    app = add_app()

    @app.model("boom")
    def boom(x: int) -> int:
        raise RuntimeError("kaboom")

    @app.model("count")
    def count(n: int) -> Iterator[int]:
        yield from range(n)

    return app


class BatchEmitter:
    """Stands in for the batcher: emits batch events through the server's real event bus."""

    def __init__(self) -> None:
        self.__name__ = "batch-emitter"

    @hookimpl(trylast=True)
    def blazerpc_startup(self, context: ServerContext) -> None:
        spec = next(s for s in context.models if s.name == "add")
        context.batch_events.batch_dispatched(spec, 6, 2)
        context.batch_events.batch_dispatched(spec, 2, 1)
        context.batch_events.queue_wait(spec, 0.003)
        context.batch_events.queue_depth(spec, 5)


def test_metrics_after_known_traffic(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    port = free_port()
    conn = blazerpc_connect(blazerpc_serve(make_app(), metrics_port=port, plugins=[BatchEmitter()]))
    stub, pb2 = conn.stub, conn.pb2
    for i in range(3):
        assert stub.PredictAdd(pb2.AddRequest(a=i, b=1), timeout=TIMEOUT).result == i + 1
    with pytest.raises(grpc.RpcError):
        stub.PredictBoom(pb2.BoomRequest(x=1), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError):
        conn.channel.unary_unary("/blazerpc.InferenceService/PredictAdd")(b"\xff\xff", timeout=TIMEOUT)
    assert [m.result for m in stub.PredictCount(pb2.CountRequest(n=4), timeout=TIMEOUT)] == [0, 1, 2, 3]

    samples = scrape(port)
    add = {"model": "add", "version": "1"}
    assert samples[("blazerpc_requests_total", labels(**add, code="OK"))] == 3
    assert samples[("blazerpc_requests_total", labels(**add, code="INVALID_ARGUMENT"))] == 1
    assert samples[("blazerpc_requests_total", labels(model="boom", version="1", code="INTERNAL"))] == 1
    assert samples[("blazerpc_requests_total", labels(model="count", version="1", code="OK"))] == 1
    assert samples[("blazerpc_request_duration_seconds_count", labels(**add))] == 4
    assert samples[("blazerpc_request_duration_seconds_bucket", labels(**add, le="+Inf"))] == 4
    assert samples[("blazerpc_request_duration_seconds_sum", labels(**add))] > 0
    assert samples[("blazerpc_inflight_requests", labels(**add))] == 0
    assert samples[("blazerpc_stream_messages_sent_total", labels(model="count", version="1"))] == 4
    # Unary calls are not streams: no stream message series for them.
    assert ("blazerpc_stream_messages_sent_total", labels(**add)) not in samples
    # The batch families, fed through context.batch_events.
    assert samples[("blazerpc_batch_size_count", labels(**add))] == 2
    assert samples[("blazerpc_batch_size_sum", labels(**add))] == 8
    assert samples[("blazerpc_batch_size_bucket", labels(**add, le="4.0"))] == 1
    assert samples[("blazerpc_queue_wait_seconds_count", labels(**add))] == 1
    assert samples[("blazerpc_queue_depth", labels(**add))] == 5
    # The process's own resources, for sizing and recycling replicas.
    assert samples[("process_resident_memory_bytes", ())] > 10 * 2**20
    assert samples[("process_open_fds", ())] > 0


def test_two_servers_keep_separate_registries(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    ports = [free_port(), free_port()]
    servers = [blazerpc_serve(make_app(), metrics_port=port) for port in ports]
    conn = blazerpc_connect(servers[0])
    conn.stub.PredictAdd(conn.pb2.AddRequest(a=1, b=1), timeout=TIMEOUT)
    ok = ("blazerpc_requests_total", labels(model="add", version="1", code="OK"))
    assert scrape(ports[0])[ok] == 1
    assert ok not in scrape(ports[1])


def test_metrics_endpoint_closes_with_the_server(blazerpc_serve: Any) -> None:
    port = free_port()
    server = blazerpc_serve(make_app(), metrics_port=port)
    assert "# TYPE blazerpc_requests_total counter" in fetch(port)  # up while serving
    server.stop(grace_period=5)
    with pytest.raises(urllib.error.URLError):
        fetch(port)


def test_disabling_metrics_plugin_serves_no_metrics(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    port = free_port()
    conn = blazerpc_connect(blazerpc_serve(make_app(), metrics_port=port, disabled=["metrics"]))
    assert conn.stub.PredictAdd(conn.pb2.AddRequest(a=1, b=1), timeout=TIMEOUT).result == 2
    with pytest.raises(urllib.error.URLError):
        fetch(port)


def test_each_worker_serves_metrics_on_its_own_port(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        "from blazerpc_core import BlazeApp\n"
        "app = BlazeApp()\n"
        "@app.model('add')\n"
        "def add(a: float, b: float) -> float:\n"
        "    return a + b\n"
    )
    base = free_port_pair()
    with serve_cli(str(app), "--workers", "2", "--metrics-port", str(base)) as server:
        texts = [wait_for_metrics(base), wait_for_metrics(base + 1)]
        assert server.stop() == 0
    assert all("# TYPE blazerpc_requests_total counter" in text for text in texts)


def free_port_pair() -> int:
    """A port that is free with the next one, below the kernel's ephemeral range (32768 and up), so no
    client connection of a test running beside this one takes the second port as its own in the meantime."""
    for base in random.Random().sample(range(20000, 32000, 2), 200):
        with socket.socket() as first, socket.socket() as second:
            try:
                first.bind(("127.0.0.1", base))
                second.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
            return base
    raise AssertionError("no two consecutive free ports in 20000-32000")


def wait_for_metrics(port: int, limit: float = 60) -> str:
    """Workers start one by one: poll (bounded) until this one's endpoint answers."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return fetch(port)
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_taken_metrics_port_fails_startup_naming_it(blazerpc_serve: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            blazerpc_serve(make_app(), metrics_port=port, load_entry_points=False)


def test_real_batches_feed_the_batch_families(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    app = BlazeApp()

    @app.model("double", max_batch_size=8)
    def double(x: list[float]) -> list[float]:
        return [v * 2 for v in x]

    port = free_port()
    conn = blazerpc_connect(blazerpc_serve(app, metrics_port=port))
    futures = [conn.stub.PredictDouble.future(conn.pb2.DoubleRequest(x=[1.0] * rows), timeout=TIMEOUT)
               for rows in (1, 2, 3)]
    assert [list(f.result().result) for f in futures] == [[2.0], [2.0] * 2, [2.0] * 3]
    samples = scrape(port)
    double_labels = labels(model="double", version="1")
    # However the three requests were grouped, the batches carried all six rows.
    assert samples[("blazerpc_batch_size_sum", double_labels)] == 6
    assert 1 <= samples[("blazerpc_batch_size_count", double_labels)] <= 3
    assert samples[("blazerpc_queue_wait_seconds_count", double_labels)] == 3
    assert samples[("blazerpc_queue_depth", double_labels)] == 0
