"""What plugins see of a server being built: settings, models, schema, thread pool."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from blazerpc_core.runtime.events import BatchEvents
from blazerpc_core.runtime.executor import ModelPool

if TYPE_CHECKING:
    from grpclib.events import RecvRequest

    from blazerpc_core.middleware import Middleware
    from blazerpc_core.registry import ModelRegistry
    from blazerpc_core.schema.builder import Schema
    from blazerpc_core.server.inference import MethodHandler
    from blazerpc_core.server.status import ErrorMapper
    from blazerpc_core.settings import ServeSettings


@dataclass
class ServerContext:
    """Handed to ``blazerpc_services``, ``blazerpc_startup`` and ``blazerpc_shutdown``."""

    settings: ServeSettings
    registry: ModelRegistry
    schema: Schema
    plugin_manager: pluggy.PluginManager
    pool: ModelPool
    errors: ErrorMapper
    handlers: list[MethodHandler] = field(default_factory=list)
    #: The composed middleware, outermost first: plugins find their own instances here
    #: (in ``blazerpc_startup``) to connect them to server resources.
    middleware: list[Middleware] = field(default_factory=list)
    #: grpclib ``RecvRequest`` listeners, attached before the server binds, that see every
    #: call of every service (health and reflection included) before its handler runs;
    #: append them from ``blazerpc_services``. Raising ``GRPCError`` refuses the call.
    request_listeners: list[Callable[[RecvRequest], Coroutine[Any, Any, None]]] = field(default_factory=list)
    #: Subscribe a BatchObserver here (in blazerpc_startup) to hear about batches.
    batch_events: BatchEvents = field(default_factory=BatchEvents)
    #: Free-form storage shared by plugins for the life of the server.
    state: dict[str, Any] = field(default_factory=dict)
    #: The bound port once the server has started (useful with port 0).
    port: int | None = None
