"""``BlazeApp`` and the standalone ``model`` decorator: how functions become models."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, overload

import pluggy
from grpclib.const import Status

from blazerpc_core.error_map import ErrorMap
from blazerpc_core.errors import RegistrationError
from blazerpc_core.registry import DEFAULT_VERSION, SPEC_ATTR, ModelRegistry, ModelSpec, as_spec, make_spec
from blazerpc_core.settings import BatchSettings

F = TypeVar("F", bound=Callable[..., Any])


def _batching(**knobs: Any) -> BatchSettings:
    return BatchSettings(**knobs)


def model(
    name: str | None = None,
    *,
    version: str | int = DEFAULT_VERSION,
    streaming: bool | None = None,
    batch: bool | None = None,
    max_batch_size: int | None = None,
    batch_timeout_ms: float | None = None,
    max_queue_size: int | None = None,
    max_concurrent_batches: int | None = None,
    max_latency_ms: float | None = None,
    policy: str | None = None,
) -> Callable[[F], F]:
    """Mark a function as a model, for model packages (no app needed).

    The function stays callable as before; its spec is attached for
    ``blazerpc_register_models`` or a ``blazerpc.models`` entry point to pick up::

        @model("text-sentiment", version=2)
        def sentiment(text: list[str]) -> list[float]: ...
    """
    batching = _batching(
        batch=batch, max_batch_size=max_batch_size, batch_timeout_ms=batch_timeout_ms,
        max_queue_size=max_queue_size, max_concurrent_batches=max_concurrent_batches,
        max_latency_ms=max_latency_ms, policy=policy,
    )

    def decorate(func: F) -> F:
        spec = make_spec(func, name, version=version, streaming=streaming, batching=batching)
        setattr(func, SPEC_ATTR, spec)
        return func

    return decorate


class BlazeApp:
    """A set of models served together, with app-wide batching defaults.

    ::

        app = BlazeApp(max_batch_size=32)

        @app.model("add")
        def add(a: float, b: float) -> float:
            return a + b

    Each decoration is checked at once (names, versions, and that every annotation maps
    to a protobuf field), so mistakes point at the decorated line.
    """

    def __init__(
        self,
        *,
        batch: bool | None = None,
        max_batch_size: int | None = None,
        batch_timeout_ms: float | None = None,
        max_queue_size: int | None = None,
        max_concurrent_batches: int | None = None,
        max_latency_ms: float | None = None,
        policy: str | None = None,
        plugins: Sequence[Any] = (),
        error_map: Mapping[type[BaseException], Status | str] | None = None,
    ) -> None:
        self.batching = _batching(
            batch=batch, max_batch_size=max_batch_size, batch_timeout_ms=batch_timeout_ms,
            max_queue_size=max_queue_size, max_concurrent_batches=max_concurrent_batches,
            max_latency_ms=max_latency_ms, policy=policy,
        )
        #: Plugins (modules or objects with hook implementations) this app needs.
        self.plugins = list(plugins)
        if error_map:
            # Exceptions the models raise → statuses, e.g. {ValueError: "INVALID_ARGUMENT"}.
            self.plugins.append(ErrorMap(error_map))
        self.registry = ModelRegistry()
        self._pm: pluggy.PluginManager | None = None

    @overload
    def model(self, name: F) -> F: ...

    @overload
    def model(
        self,
        name: str | None = None,
        *,
        version: str | int = DEFAULT_VERSION,
        streaming: bool | None = None,
        batch: bool | None = None,
        max_batch_size: int | None = None,
        batch_timeout_ms: float | None = None,
        max_queue_size: int | None = None,
        max_concurrent_batches: int | None = None,
        max_latency_ms: float | None = None,
        policy: str | None = None,
    ) -> Callable[[F], F]: ...

    def model(self, name: Any = None, **options: Any) -> Any:
        """Register a function as a model of this app; see :func:`blazerpc_core.model`."""
        if callable(name):
            return self.model()(name)

        def decorate(func: F) -> F:
            model(name, **options)(func)
            spec = as_spec(func)
            spec.batching = spec.batching.merged_over(self.batching)
            self.add(spec)
            return func

        return decorate

    def add(self, obj: Any) -> None:
        """Register a model made elsewhere (a decorated function or a spec)."""
        spec = as_spec(obj)
        self.registry.register(spec)
        try:
            self._check(spec)
        except RegistrationError:
            self.registry = _without(self.registry, spec)
            raise

    def _check(self, spec: ModelSpec) -> None:
        from blazerpc_core.plugins import make_plugin_manager
        from blazerpc_core.runtime.plan import plan_batching
        from blazerpc_core.schema.builder import SchemaBuilder

        if self._pm is None:
            self._pm = make_plugin_manager(plugins=self.plugins)
        inputs, outputs, record = SchemaBuilder(self._pm).method_fields(spec)
        # Opting in a model that cannot be batched fails here, at the decorated line.
        plan_batching(spec, inputs, outputs, record)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.registry)


def _without(registry: ModelRegistry, removed: ModelSpec) -> ModelRegistry:
    fresh = ModelRegistry()
    for spec in registry:
        if spec is not removed:
            fresh.register(spec)
    return fresh
