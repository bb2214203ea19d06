"""Build a server from models and plugins, then run it: start → serve → drain → stop.

``BlazeServer`` is the importable core that the CLI and the pytest plugin share.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import ssl
import weakref
from collections.abc import Iterable
from typing import Any

import grpclib.events
import grpclib.server
import pluggy
from grpclib.protocol import H2Protocol

from blazerpc_core.errors import RegistrationError, StartupError
from blazerpc_core.registry import ModelRegistry
from blazerpc_core.runtime.executor import Invoker, default_model_concurrency, make_pool
from blazerpc_core.runtime.plan import model_label
from blazerpc_core.schema.builder import SERVICE_FULL_NAME, build_schema
from blazerpc_core.server import health as health_status
from blazerpc_core.server.context import ServerContext
from blazerpc_core.server.gate import Gate
from blazerpc_core.server.health import HealthService
from blazerpc_core.server.inference import InferenceService, MethodHandler
from blazerpc_core.server.reflection import reflection_services
from blazerpc_core.server.status import ErrorMapper
from blazerpc_core.server.system_protos import HEALTH_SERVICE, health_file, reflection_file
from blazerpc_core.settings import ServeSettings

log = logging.getLogger("blazerpc.server")
#: Seconds cancelled handlers get to unwind once the grace period is over.
CLOSE_TIMEOUT = 2.0


class _Server(grpclib.server.Server):
    """grpclib's server, remembering its connections so shutdown can say GOAWAY and close them.

    ``Server.close()`` cancels handlers but leaves client connections open; a client would then
    wait for its deadline instead of reconnecting. Uses grpclib internals (pinned < 0.5).
    """

    def __init__(self, services: list[Any]) -> None:
        super().__init__(services)
        self.connections: weakref.WeakSet[H2Protocol] = weakref.WeakSet()

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        self.connections.add(protocol)
        return protocol

    def goaway(self) -> None:
        """Send HTTP/2 GOAWAY on every open connection, then close it."""
        for protocol in list(self.connections):
            connection = getattr(protocol, "connection", None)
            if connection is None or connection.is_closing():
                continue
            connection._connection.close_connection()
            connection.flush()
            protocol.processor.close("server shutting down")


class BlazeServer:
    """One grpclib server hosting inference, health, reflection and plugin services."""

    def __init__(
        self, registry: ModelRegistry, *, settings: ServeSettings, plugin_manager: pluggy.PluginManager
    ) -> None:
        if not len(registry):
            raise RegistrationError("no models to serve")
        self.settings = settings
        self.plugin_manager = plugin_manager
        hook = plugin_manager.hook
        schema = build_schema(registry, plugin_manager)
        self.context = ServerContext(
            settings=settings, registry=registry, schema=schema, plugin_manager=plugin_manager,
            pool=make_pool(settings.max_workers), errors=ErrorMapper(
                hide_details=settings.hide_error_details, full_details=settings.full_error_details
            ),
        )
        self.gate = Gate()
        middleware = [m for batch in hook.blazerpc_middleware(settings=settings)[::-1] if batch for m in batch]
        self.context.middleware = middleware
        pool = self.context.pool
        concurrency = settings.max_model_threads or default_model_concurrency(pool.max_threads)
        for method in schema.methods:
            spec = method.spec
            policy = hook.blazerpc_batching_policy(spec=spec, settings=settings)
            invoker = Invoker(
                spec.func, is_async=spec.is_async, pool=pool, inline_budget=settings.inline_budget_us / 1e6,
                max_concurrency=concurrency, label=model_label(spec),
            )
            self.context.handlers.append(
                MethodHandler(
                    method, runner=policy.create_runner(method, invoker, self.context.batch_events),
                    middleware=middleware,
                    gate=self.gate, errors=self.context.errors, pool=self.context.pool,
                    max_message_bytes=settings.max_message_bytes,
                )
            )
        extra = [s for batch in hook.blazerpc_services(context=self.context)[::-1] if batch for s in batch]
        self._pool = schema.pool
        for file in (health_file(), reflection_file("v1"), reflection_file("v1alpha")):
            self._pool.Add(file)
        self.inference = InferenceService(self.context.handlers)
        names = [SERVICE_FULL_NAME, HEALTH_SERVICE, *(_service_name(s) for s in extra)]
        self.health = HealthService(self._pool, [n for n in names if n != HEALTH_SERVICE])
        services = [self.inference, self.health, *extra, *reflection_services(self._pool, names)]
        _check_paths(services)
        self._services = services
        self._server: _Server | None = None
        self._stopping: asyncio.Task[None] | None = None

    @property
    def port(self) -> int | None:
        return self.context.port

    async def start(self) -> None:
        """Bind, warm runners and run startup hooks, then open the gate and report SERVING."""
        settings = self.settings
        self._server = _Server(self._services)
        for listener in self.context.request_listeners:
            grpclib.events.listen(self._server, grpclib.events.RecvRequest, listener)
        # Bind first: while models warm up, health answers NOT_SERVING and calls UNAVAILABLE.
        try:
            await self._server.start(
                settings.host, settings.port, ssl=_ssl_context(settings),
                reuse_port=settings.workers > 1 or None,
            )
        except OSError as exc:
            raise StartupError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from exc
        bound: Any = self._server._server  # grpclib keeps its asyncio server private
        sockets = bound.sockets if bound is not None else ()
        self.context.port = sockets[0].getsockname()[1] if sockets else settings.port
        for handler in self.context.handlers:
            await handler.runner.start()
        try:
            await _call_all(self.plugin_manager.hook.blazerpc_startup(context=self.context))
        except OSError as exc:
            raise StartupError(f"a startup hook failed: {exc}") from exc
        self.gate.open = True
        self.health.set_all(health_status.SERVING)

    async def stop(self, grace_period: float | None = None) -> None:
        """NOT_SERVING first, refuse new calls, let in-flight ones finish, then close."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace_period))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace_period: float | None) -> None:
        grace = self.settings.grace_period if grace_period is None else grace_period
        self.health.set_all(health_status.NOT_SERVING)
        self.gate.open = False
        await self.health.delivered(timeout=min(grace, 1.0))
        if not await self.gate.drained(grace):
            log.warning("grace period of %.1fs over with %d call(s) in flight; cancelling them",
                        grace, self.gate.inflight)
        for handler in self.context.handlers:
            await handler.runner.stop()
        if self._server is not None:
            self._server.close()
            self._server.goaway()
            # Handlers were cancelled; one stuck in model code that never returns must not
            # hold the stop past its bound.
            try:
                await asyncio.wait_for(self._server.wait_closed(), CLOSE_TIMEOUT)
            except TimeoutError:
                log.warning("%d model call(s) did not return after the grace period; leaving them behind",
                            self.context.pool.busy)
        await _call_all(self.plugin_manager.hook.blazerpc_shutdown(context=self.context))
        self.context.pool.shutdown(wait=False, cancel_futures=True)

    async def serve_forever(self, *, on_ready: Any = None) -> None:
        """Start, wait for SIGTERM/SIGINT, then drain. A second signal skips the grace period."""
        await self.start()
        if on_ready is not None:
            on_ready(self)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals = (signal.SIGTERM, signal.SIGINT)

        def on_signal() -> None:
            if stop.is_set():
                log.warning("second signal: closing without waiting for in-flight calls")
                self.gate.open = False
                if self._server is not None:
                    self._server.close()
            stop.set()

        for sig in signals:
            loop.add_signal_handler(sig, on_signal)
        try:
            await stop.wait()
            log.info("shutting down: draining for up to %.1fs", self.settings.grace_period)
            await self.stop()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)


def _service_name(service: Any) -> str:
    path = next(iter(service.__mapping__()))
    return str(path.split("/")[1])


def _check_paths(services: Iterable[Any]) -> None:
    """grpclib keeps the later of two handlers for one path silently; refuse instead."""
    owner: dict[str, Any] = {}
    for service in services:
        for path in service.__mapping__():
            if path in owner:
                raise RegistrationError(
                    f"rpc path {path} is served by both {owner[path]!r} and {service!r}"
                )
            owner[path] = service


def _ssl_context(settings: ServeSettings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    if not settings.tls_key:
        raise RegistrationError("--tls-cert needs --tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca:
        context.load_verify_locations(settings.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    return context


async def _call_all(results: Iterable[Any]) -> None:
    for result in results:
        if inspect.isawaitable(result):
            await result
