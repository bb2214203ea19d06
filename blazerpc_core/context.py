"""What plugins see of a running server: ``blazerpc_services``, ``blazerpc_startup``, ``blazerpc_shutdown``.

The server fills it in as it is built; the parts that change while it runs (the served
models, the descriptor pool, health) are live views, so a plugin that keeps the context
always sees the current state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from blazerpc_core.runtime.events import BatchEvents

if TYPE_CHECKING:
    from grpclib.const import Status
    from grpclib.events import RecvRequest

    from blazerpc_core.call import Middleware
    from blazerpc_core.settings import ServeSettings
    from blazerpc_core.spec import ModelSpec


class Models(Protocol):
    """The models served right now (a live view)."""

    def __iter__(self) -> Iterator[ModelSpec]: ...

    def __len__(self) -> int: ...

    def names(self) -> list[str]: ...

    def versions(self, name: str) -> list[ModelSpec]: ...

    def default(self, name: str) -> ModelSpec: ...

    def get(self, name: str, version: str) -> ModelSpec | None: ...


class ErrorRegistry(Protocol):
    """Where plugins map exception types to statuses (the ``error-map`` plugin and apps use it)."""

    def register(self, exc_type: type[BaseException], status: Status) -> None: ...


class Descriptors(Protocol):
    """The server's private descriptor pool and the services it hosts, for reflection (a live view)."""

    @property
    def pool(self) -> Any: ...

    def service_names(self) -> list[str]: ...

    def add_file(self, file: Any) -> None:
        """Serve a plugin service's ``FileDescriptorProto`` through reflection (kept across model changes)."""
        ...


class Health(Protocol):
    """Serving status per health key (``""``, service names, ``blazerpc.model.<name>``)."""

    def set(self, service: str, status: int) -> None: ...

    def set_all(self, status: int) -> None: ...

    def status(self, service: str) -> int | None: ...

    def forget(self, service: str) -> None: ...


class Calls(Protocol):
    """Calls into served models for a plugin's own service (see ``server.calls.ModelCalls``).

    ``entry(name, version)`` finds what serves a model (NOT_FOUND naming it otherwise);
    ``call`` and ``stream`` run one call through the server's gate, middleware chain and
    the model's runner, raising a ``BlazeError`` with the status a native call would get.
    """

    def entry(self, name: str, version: str | None = None) -> Any: ...

    async def call(self, entry: Any, args: Sequence[Any], *, rpc: str, path: str, metadata: Any,
                   peer: str | None = None, deadline: Any = None) -> Any: ...

    def stream(self, entry: Any, args: Sequence[Any], *, rpc: str, path: str, metadata: Any,
               peer: str | None = None, deadline: Any = None) -> AsyncIterator[Any]: ...


@dataclass
class ServerContext:
    """Handed to ``blazerpc_services``, ``blazerpc_startup`` and ``blazerpc_shutdown``."""

    settings: ServeSettings
    #: The models served now.
    models: Models
    #: The thread pool sync model code runs in (run blocking plugin work here, not on the loop).
    pool: Executor
    errors: ErrorRegistry
    descriptors: Descriptors
    #: The composed middleware, outermost first: plugins find their own instances here
    #: (in ``blazerpc_startup``) to connect them to server resources.
    middleware: Sequence[Middleware] = ()
    #: grpclib ``RecvRequest`` listeners, attached before the server binds, that see every
    #: call of every service (health and reflection included) before its handler runs;
    #: append them from ``blazerpc_services``. Raising ``GRPCError`` refuses the call.
    request_listeners: list[Callable[[RecvRequest], Coroutine[Any, Any, None]]] = field(default_factory=list)
    #: Subscribe a BatchObserver here (in blazerpc_startup) to hear about batches.
    batch_events: BatchEvents = field(default_factory=BatchEvents)
    #: Set by the ``health`` plugin (always loaded) when it contributes its service.
    health: Health | None = None
    #: The model host: load, reload, unload and describe models while serving (management plugins).
    host: Any = None
    #: Calls into the served models from a plugin's own service (another protocol).
    calls: Calls | None = None
    #: Free-form storage shared by plugins for the life of the server.
    state: dict[str, Any] = field(default_factory=dict)
    #: The bound port once the server has started (useful with port 0).
    port: int | None = None
