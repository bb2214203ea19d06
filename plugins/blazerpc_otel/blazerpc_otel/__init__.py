"""blazerpc-otel: OpenTelemetry tracing for blazerpc, installed separately (``pip install blazerpc-otel``).

The plugin (``tracing``, registered through the ``blazerpc.plugins`` entry point) adds a
middleware that starts one SERVER span per call, continuing the client's W3C trace,
once the process has an OpenTelemetry tracer provider configured.
"""

from blazerpc_otel.plugin import TracingMiddleware, tracer_if_configured

__all__ = ["TracingMiddleware", "tracer_if_configured"]
