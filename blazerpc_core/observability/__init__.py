"""Built-in observability plugins: request ids, access logs, Prometheus metrics, tracing.

Each module is a default plugin that can be disabled by name (``blazerpc plugins``).
"""
