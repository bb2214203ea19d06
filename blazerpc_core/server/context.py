"""What plugins see of a server being built: settings, models, schema, thread pool."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from blazerpc_core.runtime.events import BatchEvents

if TYPE_CHECKING:
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
    pool: ThreadPoolExecutor
    errors: ErrorMapper
    handlers: list[MethodHandler] = field(default_factory=list)
    #: Subscribe a BatchObserver here (in blazerpc_startup) to hear about batches.
    batch_events: BatchEvents = field(default_factory=BatchEvents)
    #: Free-form storage shared by plugins for the life of the server.
    state: dict[str, Any] = field(default_factory=dict)
    #: The bound port once the server has started (useful with port 0).
    port: int | None = None
