"""A built server's life: start (bind, load and warm models, SERVING) → serve → drain → stop.

:class:`BlazeServer` owns no building: :func:`blazerpc_core.build.build_server` hands it
the server context, the model host and the services plugins contributed. Start binds
first, so health answers NOT_SERVING (and calls UNAVAILABLE) while models load and warm.
Stop is the drain a proxy can follow: NOT_SERVING at once, keep accepting for
``drain_delay`` seconds (while proxies' health checks notice), a graceful HTTP/2 GOAWAY
(clients and proxies open new streams elsewhere), in-flight calls finish within
``grace_period``, then close.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import grpclib.const
import grpclib.events

from blazerpc_core.context import Health, ServerContext
from blazerpc_core.errors import RegistrationError, StartupError
from blazerpc_core.method import SERVICE_FULL_NAME, Schema
from blazerpc_core.runtime.executor import ModelPool, measure_hop
from blazerpc_core.server.calls import CallSteps
from blazerpc_core.server.host import MODEL_HEALTH_PREFIX, ModelEntry, ModelHost, ModelState
from blazerpc_core.server.routes import Route, gone_handler, routes_for
from blazerpc_core.server.wire.limits import WireLimits
from blazerpc_core.server.wire.server import WireServer
from blazerpc_core.settings import ServeSettings

log = logging.getLogger("blazerpc.server")
#: Seconds cancelled handlers get to unwind once the grace period is over.
CLOSE_TIMEOUT = 2.0
INFERENCE_PREFIX = f"/{SERVICE_FULL_NAME}/"
SERVING, NOT_SERVING = 1, 2

Lifecycle = Callable[[ServerContext], Awaitable[None]]


class BlazeServer:
    """One grpclib server hosting inference, health, reflection and plugin services.

    Use it as ``async with server:`` (start, then stop on exit), or call :meth:`start`
    and :meth:`stop`, or :meth:`serve_forever` to run until SIGTERM/SIGINT.
    """

    def __init__(
        self,
        context: ServerContext,
        host: ModelHost,
        steps: CallSteps,
        services: Sequence[Any],
        *,
        startup: Lifecycle,
        shutdown: Lifecycle,
    ) -> None:
        self.context = context
        self.settings: ServeSettings = context.settings
        self.host = host
        self.limits = WireLimits.from_settings(self.settings)
        self._startup = startup
        self._shutdown = shutdown
        self.steps = steps
        self.gate = steps.gate
        self._services = list(services)
        _check_paths(self._services)
        host.services = [SERVICE_FULL_NAME, *(_service_name(s) for s in self._services)]
        self.routes: dict[str, Route] = {}
        #: rpcs of models unloaded while serving: answered NOT_FOUND naming the model.
        self._gone: dict[str, grpclib.const.Handler] = {}
        self._health_names: set[str] = set()
        self._server: WireServer | None = None
        self._serving = False
        host.listeners.append(self._swap)
        host.rebuild()
        self._stopping: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    # -- what a running server exposes ----------------------------------------------------

    @property
    def port(self) -> int | None:
        return self.context.port

    @property
    def schema(self) -> Schema:
        """The schema served now (it changes when models are loaded, reloaded or unloaded)."""
        return self.host.schema

    @property
    def wire(self) -> WireServer | None:
        """The HTTP/2 server once started: its connections, limits and GOAWAY (``wire.stats()``)."""
        return self._server

    @property
    def health(self) -> Health:
        health = self.context.health
        if health is None:
            raise RegistrationError("the health plugin did not register (it is essential)")
        return health

    def _swap(self, schema: Schema) -> None:
        """The host changed the served models: new routes (and a clear answer on the rpcs that went), health."""
        previous = self.routes
        self.routes = routes_for(schema.methods, self.host, self.steps, self.context.middleware)
        for path, route in previous.items():
            if path not in self.routes:
                self._gone[path] = gone_handler(route.method, route.entry)
        for path in self.routes:
            self._gone.pop(path, None)
        if self._server is not None:
            self._server.replace_routes(INFERENCE_PREFIX, self._handlers())
        if self.context.health is not None:
            self._model_health()

    def _handlers(self) -> dict[str, grpclib.const.Handler]:
        return {**self._gone, **{path: route.handler for path, route in self.routes.items()}}

    def _model_health(self) -> None:
        """``blazerpc.model.<name>``: SERVING while the name's default version is ready (and the server serves)."""
        health = self.health
        names = set(self.host.registry.names())
        for name in names:
            entry = self.host.entry(name)
            ready = entry is not None and entry.state is ModelState.READY and self._serving
            health.set(MODEL_HEALTH_PREFIX + name, SERVING if ready else NOT_SERVING)
        gone = {e.spec.name for e in self.host.failed.values()} | self._health_names
        for name in gone - names:
            health.set(MODEL_HEALTH_PREFIX + name, NOT_SERVING)
        self._health_names = names | gone

    # -- start ---------------------------------------------------------------------------------

    async def start(self, *, on_model: Callable[[ModelEntry], None] | None = None) -> None:
        """Bind, load and warm the models, run startup hooks, then open the gate and report SERVING.

        ``on_model`` hears about each model as it finishes loading (or fails). A model that
        fails stops the start (``--on-load-error fail``, the default) or is left out
        (``skip``).
        """
        settings = self.settings
        server = self._server = WireServer(self._services, limits=self.limits)
        server.replace_routes(INFERENCE_PREFIX, self._handlers())
        for listener in self.context.request_listeners:
            grpclib.events.listen(server, grpclib.events.RecvRequest, listener)
        for name in self.host.services:
            self.health.set(name, NOT_SERVING)
        self.health.set_all(NOT_SERVING)
        try:
            await server.start(
                settings.host, settings.port, ssl=_ssl_context(settings), reuse_port=settings.workers > 1 or None
            )
        except OSError as exc:
            raise StartupError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from exc
        self.context.port = server.bound_port() or settings.port
        report = on_model or _log_model
        pool = self.context.pool
        if settings.inline_budget_us is None and isinstance(pool, ModelPool):
            await measure_hop(pool)  # before any model loads: their inline budget depends on it
        try:
            await self.host.load_all(skip_failures=settings.on_load_error == "skip", report=report)
        except Exception as exc:
            failed = next((e for e in self.host.entries.values() if e.state is ModelState.FAILED), None)
            what = f"model {failed.label}" if failed is not None else "a model"
            await self._abort()
            raise StartupError(f"{what} failed to load: {type(exc).__name__}: {exc}") from exc
        try:
            await self._startup(self.context)
        except OSError as exc:
            await self._abort()
            raise StartupError(f"a startup hook failed: {exc}") from exc
        # Everything made so far (modules, models, weights) lives as long as the server: the
        # collector need not walk it again, which shortens each full collection while serving.
        gc.collect()
        gc.freeze()
        self.gate.open = True
        self._serving = True
        self.health.set_all(SERVING)
        self._model_health()

    async def _abort(self) -> None:
        await self.host.close()
        if self._server is not None:
            self._server.close()
            self._server.close_all()
        self.context.pool.shutdown(wait=False, cancel_futures=True)

    # -- stop ----------------------------------------------------------------------------------

    async def stop(self, grace_period: float | None = None, *, drain_delay: float | None = None) -> None:
        """NOT_SERVING, keep accepting for ``drain_delay``, GOAWAY, let in-flight calls finish, then close."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace_period, drain_delay))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace_period: float | None, drain_delay: float | None) -> None:
        settings = self.settings
        grace = settings.grace_period if grace_period is None else grace_period
        delay = settings.drain_delay if drain_delay is None else drain_delay
        self._serving = False
        self.health.set_all(NOT_SERVING)
        delivered = getattr(self.health, "delivered", None)
        if delivered is not None:
            await delivered(timeout=min(grace, 1.0))
        server = self._server
        if delay > 0:
            log.info("draining: still accepting calls for %.1fs while load balancers notice", delay)
            await asyncio.sleep(delay)
        deadline = asyncio.get_running_loop().time() + grace
        if server is not None:
            server.stop_listening()
            server.goaway(graceful=True)
            # Until a client has seen the first GOAWAY it may still open calls, which the server
            # promised to serve: wait for every final GOAWAY, after which every call that will
            # ever arrive has, before waiting for the calls in flight.
            await server.wait_final_goaways(grace)
        if not await self.gate.drained(max(0.0, deadline - asyncio.get_running_loop().time())):
            log.warning("grace period of %.1fs over with %d call(s) in flight; cancelling them",
                        grace, self.gate.inflight)
        self.gate.open = False
        await self.host.close()
        if server is not None:
            server.close()
            server.close_all()
            # Handlers were cancelled; one stuck in model code that never returns must not
            # hold the stop past its bound.
            try:
                await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)
            except TimeoutError:
                log.warning("%d model call(s) did not return after the grace period; leaving them behind",
                            getattr(self.context.pool, "busy", 0))
        await self._shutdown(self.context)
        self.context.pool.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()

    async def wait_stopped(self) -> None:
        """Until :meth:`stop` has finished."""
        await self._stopped.wait()

    async def __aenter__(self) -> BlazeServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def serve_forever(self, *, on_ready: Callable[[BlazeServer], None] | None = None,
                            on_model: Callable[[ModelEntry], None] | None = None) -> None:
        """Start, wait for SIGTERM/SIGINT, then drain. A second signal skips the waiting."""
        await self.start(on_model=on_model)
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
                    self._server.close_all()
            stop.set()

        for sig in signals:
            loop.add_signal_handler(sig, on_signal)
        try:
            await stop.wait()
            log.info("shutting down: draining for up to %.1fs", self.settings.drain_delay + self.settings.grace_period)
            await self.stop()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)


def _log_model(entry: ModelEntry) -> None:
    if entry.state is ModelState.FAILED:
        log.error("model %s failed to load: %s", entry.label, entry.error)
        return
    log.info("model %s ready (load %.2fs, warm-up %.2fs)", entry.label, entry.load_seconds, entry.warm_seconds)


def _service_name(service: Any) -> str:
    path = next(iter(service.__mapping__()))
    return str(path.split("/")[1])


def _check_paths(services: Iterable[Any]) -> None:
    """grpclib keeps the later of two handlers for one path silently; refuse instead."""
    owner: dict[str, Any] = {}
    for service in services:
        for path in service.__mapping__():
            if path.startswith(INFERENCE_PREFIX):
                raise RegistrationError(f"rpc path {path} belongs to the inference service; {service!r} cannot have it")
            if path in owner:
                raise RegistrationError(f"rpc path {path} is served by both {owner[path]!r} and {service!r}")
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
