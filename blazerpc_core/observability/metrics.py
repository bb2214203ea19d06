"""Prometheus metrics, served over HTTP at ``/metrics`` on ``--metrics-port``.

Families (labels in braces):

* ``blazerpc_requests_total{model,version,code}``: finished calls by gRPC status name;
* ``blazerpc_request_duration_seconds{model,version}``: histogram of call latency;
* ``blazerpc_inflight_requests{model,version}``: calls running now;
* ``blazerpc_batch_size{model,version}``: histogram of rows per dispatched batch;
* ``blazerpc_queue_wait_seconds{model,version}``: histogram of time spent queued;
* ``blazerpc_queue_depth{model,version}``: rows waiting in a model's queue;
* ``blazerpc_stream_messages_received_total`` / ``blazerpc_stream_messages_sent_total``
  ``{model,version}``: messages of streaming calls.

Every server gets its own ``CollectorRegistry``, so several servers (or tests) in one
process never share series. The plugin is off (no middleware at all) unless a metrics
port is set.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server

from blazerpc_core.markers import hookimpl
from blazerpc_core.server.supervisor import worker_id
from blazerpc_core.spec import Streaming

if TYPE_CHECKING:
    from collections.abc import Sequence
    from wsgiref.simple_server import WSGIServer

    from blazerpc_core.call import CallContext, CallNext, Middleware
    from blazerpc_core.context import ServerContext
    from blazerpc_core.settings import ServeSettings
    from blazerpc_core.spec import ModelSpec

log = logging.getLogger("blazerpc.metrics")

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
STATE_KEY = "metrics"
_LABELS = ("model", "version")


class ServerMetrics:
    """The metric families of one server, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            registry = CollectorRegistry()
            # The process's memory, CPU and file descriptors (process_resident_memory_bytes, ...):
            # what an operator watches to size and recycle replicas.
            ProcessCollector(registry=registry)
        self.registry = r = registry
        self.requests = Counter(
            "blazerpc_requests_total", "Finished calls by gRPC status.", (*_LABELS, "code"), registry=r
        )
        self.duration = Histogram(
            "blazerpc_request_duration_seconds", "Call latency, from arrival to final status.",
            _LABELS, buckets=LATENCY_BUCKETS, registry=r,
        )
        self.inflight = Gauge("blazerpc_inflight_requests", "Calls in progress.", _LABELS, registry=r)
        self.batch_size = Histogram(
            "blazerpc_batch_size", "Rows per dispatched batch.", _LABELS, buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "blazerpc_queue_wait_seconds", "Time a request waited in a batch queue.",
            _LABELS, buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "blazerpc_queue_depth", "Rows waiting in a batch queue.", _LABELS, registry=r
        )
        self.messages_in = Counter(
            "blazerpc_stream_messages_received", "Messages received on streaming calls.",
            _LABELS, registry=r,
        )
        self.messages_out = Counter(
            "blazerpc_stream_messages_sent", "Messages sent on streaming calls.", _LABELS, registry=r
        )


class _CallSeries:
    """Label children of one rpc, resolved once: ``labels()`` takes a lock and a dict lookup."""

    __slots__ = (
        "_codes", "_duration", "_in", "_inflight", "_labels", "_out", "_requests", "_streams", "done", "start",
    )

    def __init__(self, metrics: ServerMetrics, spec: ModelSpec) -> None:
        self._labels = (spec.name, spec.version)
        self._requests = metrics.requests
        self._codes: dict[str, Any] = {}
        self._duration = metrics.duration.labels(*self._labels)
        self._inflight = metrics.inflight.labels(*self._labels)
        # Unary rpcs get no stream series at all, rather than series stuck at zero.
        self._streams = spec.streaming is not Streaming.UNARY
        if self._streams:
            self._in = metrics.messages_in.labels(*self._labels)
            self._out = metrics.messages_out.labels(*self._labels)
        self.start = self._inflight.inc
        self.done = self._done

    def _done(self, ctx: CallContext) -> None:
        self._inflight.dec()
        self._duration.observe(ctx.elapsed())
        counter = self._codes.get(ctx.status)
        if counter is None:
            counter = self._codes[ctx.status] = self._requests.labels(*self._labels, ctx.status)
        counter.inc()
        if self._streams:
            self._in.inc(ctx.messages_in)
            self._out.inc(ctx.messages_out)


class MetricsMiddleware:
    """Counts and times every call; the series are resolved once per rpc path."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics
        self._series: dict[str, _CallSeries] = {}

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        series = self._series.get(ctx.path)
        if series is None:
            series = self._series[ctx.path] = _CallSeries(self.metrics, ctx.model)
        series.start()
        ctx.on_done.append(series.done)
        return await call_next(ctx)


class BatchMetrics:
    """A batch-event observer feeding the batch size, queue wait and queue depth families."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics
        # Keyed by spec identity: specs live as long as the server and are not hashable.
        self._children: dict[int, tuple[Any, Any, Any]] = {}

    def _for(self, spec: ModelSpec) -> tuple[Any, Any, Any]:
        children = self._children.get(id(spec))
        if children is None:
            m, labels = self._metrics, (spec.name, spec.version)
            children = self._children[id(spec)] = (
                m.batch_size.labels(*labels), m.queue_wait.labels(*labels), m.queue_depth.labels(*labels)
            )
        return children

    def batch_dispatched(self, spec: ModelSpec, rows: int, requests: int) -> None:
        self._for(spec)[0].observe(rows)

    def batch_finished(self, spec: ModelSpec, rows: int, requests: int, seconds: float) -> None:
        return None

    def queue_wait(self, spec: ModelSpec, seconds: float) -> None:
        self._for(spec)[1].observe(seconds)

    def queue_depth(self, spec: ModelSpec, rows: int) -> None:
        self._for(spec)[2].set(rows)


@dataclass
class MetricsExporter:
    """The running ``/metrics`` HTTP endpoint of one server (``context.state["metrics"]``)."""

    metrics: ServerMetrics
    host: str
    port: int
    _httpd: WSGIServer
    _thread: threading.Thread

    @classmethod
    def start(cls, metrics: ServerMetrics, host: str, port: int) -> MetricsExporter:
        try:
            httpd, thread = start_http_server(port, addr=host, registry=metrics.registry)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
        bound = int(httpd.server_address[1])
        return cls(metrics=metrics, host=host, port=bound, _httpd=httpd, _thread=thread)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def worker_port(settings: ServeSettings) -> int:
    """The metrics port of this process: ``--metrics-port + i - 1`` for worker i of ``--workers N``.

    Each worker has its own registry, so each needs its own port; Prometheus scrapes
    them all and sums.
    """
    port = settings.metrics_port or 0
    worker = worker_id()
    if settings.workers > 1 and worker is not None and port:
        return port + worker - 1
    return port


@hookimpl
def blazerpc_middleware(settings: ServeSettings) -> Sequence[Middleware] | None:
    if settings.metrics_port is None:
        return None
    return [MetricsMiddleware(ServerMetrics())]


@hookimpl
def blazerpc_startup(context: ServerContext) -> None:
    middleware = next((m for m in context.middleware if isinstance(m, MetricsMiddleware)), None)
    port = context.settings.metrics_port
    if middleware is None or port is None:
        return
    context.batch_events.subscribe(BatchMetrics(middleware.metrics))
    exporter = MetricsExporter.start(middleware.metrics, context.settings.host, worker_port(context.settings))
    context.state[STATE_KEY] = exporter
    log.info("metrics on http://%s:%d/metrics", exporter.host, exporter.port)


@hookimpl
def blazerpc_shutdown(context: ServerContext) -> None:
    exporter = context.state.pop(STATE_KEY, None)
    if isinstance(exporter, MetricsExporter):
        exporter.stop()
