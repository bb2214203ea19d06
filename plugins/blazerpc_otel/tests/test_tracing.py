"""OpenTelemetry tracing: a SERVER span per call that continues the client's W3C trace.

Runs in the plugin's own nox session, with the plugin and ``opentelemetry-sdk`` installed.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from blazerpc_core import BlazeApp

TIMEOUT = 10
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


class Collector(SpanExporter):
    """Keeps finished spans; spans end after the status is sent, so tests wait for them."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.changed = threading.Condition()

    def export(self, spans: Any) -> SpanExportResult:
        with self.changed:
            self.spans.extend(spans)
            self.changed.notify_all()
        return SpanExportResult.SUCCESS

    def wait_for(self, count: int) -> list[ReadableSpan]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.spans) >= count, TIMEOUT)
            return list(self.spans)


@pytest.fixture
def spans() -> Iterator[Collector]:
    # The global provider can be set once per process: reuse it if another test set it.
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    collector = Collector()
    processor = SimpleSpanProcessor(collector)
    provider.add_span_processor(processor)
    yield collector
    processor.shutdown()


def make_app() -> BlazeApp:
    app = BlazeApp()

    @app.model("add")
    def add(a: float, b: float) -> float:
        return a + b

    @app.model("boom")
    def boom(x: int) -> int:
        raise RuntimeError("kaboom")

    return app


def test_span_per_call_continues_the_client_trace(
    blazerpc_serve: Any, blazerpc_stubs: Any, spans: Collector
) -> None:
    server = blazerpc_serve(make_app())
    stubs = blazerpc_stubs(server)
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    with grpc.insecure_channel(server.address) as channel:
        stub = stubs.pb2_grpc.InferenceServiceStub(channel)
        metadata = (("traceparent", traceparent), ("x-request-id", "traced-1"))
        assert stub.PredictAdd(stubs.pb2.AddRequest(a=1, b=2), metadata=metadata, timeout=TIMEOUT).result == 3
        with pytest.raises(grpc.RpcError):
            stub.PredictBoom(stubs.pb2.BoomRequest(x=1), timeout=TIMEOUT)
    ok, failed = spans.wait_for(2)

    assert ok.name == "blazerpc.InferenceService/PredictAdd"
    assert ok.kind is trace.SpanKind.SERVER
    assert format(ok.context.trace_id, "032x") == TRACE_ID
    assert ok.parent is not None and format(ok.parent.span_id, "016x") == PARENT_ID
    attributes = dict(ok.attributes or {})
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.method"] == "PredictAdd"
    assert attributes["blazerpc.model"] == "add"
    assert attributes["blazerpc.request_id"] == "traced-1"
    assert attributes["rpc.grpc.status_code"] == 0
    assert ok.status.status_code is trace.StatusCode.UNSET

    # Without a traceparent the call starts a trace of its own; failures mark the span.
    assert format(failed.context.trace_id, "032x") != TRACE_ID and failed.parent is None
    assert dict(failed.attributes or {})["rpc.grpc.status_code"] == 13
    assert failed.status.status_code is trace.StatusCode.ERROR
    assert "kaboom" in (failed.status.description or "")


def test_disabling_tracing_plugin_makes_no_spans(
    blazerpc_serve: Any, blazerpc_stubs: Any, spans: Collector
) -> None:
    server = blazerpc_serve(make_app(), disabled=["tracing"])
    stubs = blazerpc_stubs(server)
    with grpc.insecure_channel(server.address) as channel:
        stub = stubs.pb2_grpc.InferenceServiceStub(channel)
        assert stub.PredictAdd(stubs.pb2.AddRequest(a=1, b=2), timeout=TIMEOUT).result == 3
    server.stop(grace_period=5)
    assert spans.spans == []


def test_without_a_tracer_provider_the_plugin_adds_no_middleware():
    # A fresh interpreter: this module configures a provider, which OpenTelemetry allows once per process.
    code = (
        "from blazerpc_core import ServeSettings\n"
        "from blazerpc_otel import plugin\n"
        "assert plugin.blazerpc_middleware(settings=ServeSettings()) is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
