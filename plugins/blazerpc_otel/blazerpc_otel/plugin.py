"""The ``tracing`` plugin: one OpenTelemetry SERVER span per call, continuing the client's W3C trace.

Active only when the process has a tracer provider configured
(``trace.set_tracer_provider(...)`` or ``opentelemetry-instrument``) by the time the
server is built; otherwise the plugin adds nothing to the request path. Written against
the public plugin API only (``blazerpc_core.plugin``).

The parent context comes from the request metadata through the globally configured
propagator (W3C ``traceparent``/``tracestate`` by default). The span is current while
the middleware chain runs; it ends when the call's final status is known, so a
streaming call's span covers the whole stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blazerpc_core.plugin import Status, hookimpl

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.trace import Tracer

    from blazerpc_core.plugin import CallContext, CallNext, Middleware, ServeSettings

INSTRUMENTATION_NAME = "blazerpc"
#: Where the call's span is kept, for middleware after this one (``ctx.state[SPAN_KEY]``).
SPAN_KEY = "span"
_CODES = {status.name: status.value for status in Status}


class TracingMiddleware:
    """Starts a span per call named ``<service>/<method>``, with rpc and model attributes."""

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry import context, propagate, trace

        self._tracer = tracer
        self._extract = propagate.extract
        self._attach = context.attach
        self._detach = context.detach
        self._with_span = trace.set_span_in_context
        self._server_kind = trace.SpanKind.SERVER
        self._error = trace.StatusCode.ERROR
        self._status_type = trace.Status
        self._on_done = self._end

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        service, _, method = ctx.path.lstrip("/").partition("/")
        span = self._tracer.start_span(
            f"{service}/{method}",
            context=self._extract(ctx.metadata),
            kind=self._server_kind,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": method,
                "blazerpc.model": ctx.model.name,
                "blazerpc.model_version": ctx.model.version,
            },
        )
        request_id = ctx.request_id
        if request_id is not None:
            span.set_attribute("blazerpc.request_id", request_id)
        ctx.state[SPAN_KEY] = span
        ctx.on_done.append(self._on_done)
        token = self._attach(self._with_span(span))
        try:
            return await call_next(ctx)
        finally:
            self._detach(token)

    def _end(self, ctx: CallContext) -> None:
        span = ctx.state.get(SPAN_KEY)
        if span is None:
            return
        span.set_attribute("rpc.grpc.status_code", _CODES.get(ctx.status, Status.UNKNOWN.value))
        if ctx.status != "OK":
            span.set_status(self._status_type(self._error, ctx.status_message or ctx.status))
        span.end()


def tracer_if_configured() -> Tracer | None:
    """The blazerpc tracer, or None when OpenTelemetry is absent or has no provider set."""
    from opentelemetry import trace

    # The API's default provider only records into the void: tracing it would cost
    # every call a span for nothing.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None
    return trace.get_tracer(INSTRUMENTATION_NAME)


@hookimpl
def blazerpc_middleware(settings: ServeSettings) -> Sequence[Middleware] | None:
    tracer = tracer_if_configured()
    return None if tracer is None else [TracingMiddleware(tracer)]
