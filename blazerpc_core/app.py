"""``BlazeApp`` and the standalone ``model`` decorator: how functions and classes become models."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, overload

from grpclib.const import Status

from blazerpc_core.defaults.error_map import ErrorMap
from blazerpc_core.errors import RegistrationError
from blazerpc_core.naming import DEFAULT_VERSION
from blazerpc_core.registry import ModelRegistry
from blazerpc_core.settings import BatchSettings
from blazerpc_core.spec import SPEC_ATTR, ModelSpec, as_spec, make_spec

F = TypeVar("F", bound=Callable[..., Any])


def model(
    name: str | None = None,
    *,
    version: str | int = DEFAULT_VERSION,
    streaming: bool | None = None,
    **batching: Any,
) -> Callable[[F], F]:
    """Mark a function (or a class with ``__call__``) as a model, for model packages (no app needed).

    It stays usable as before; its spec is attached for ``blazerpc_register_models`` or a
    ``blazerpc.models`` entry point to pick up. Keyword arguments beyond ``version`` and
    ``streaming`` are batching knobs (``batch``, ``max_batch_size``, ... see
    :class:`~blazerpc_core.settings.BatchSettings`)::

        @model("text-sentiment", version=2)
        def sentiment(text: list[str]) -> list[float]: ...
    """
    knobs = BatchSettings.from_knobs(batching, where="model()")

    def decorate(obj: F) -> F:
        spec = make_spec(obj, name, version=version, streaming=streaming, batching=knobs)
        setattr(obj, SPEC_ATTR, spec)
        return obj

    return decorate


class BlazeApp:
    """A set of models served together, with app-wide batching defaults and the plugins they need.

    ::

        app = BlazeApp(max_batch_size=32)

        @app.model("add")
        def add(a: float, b: float) -> float:
            return a + b

    Each decoration is checked at once (names, versions, that every annotation maps to a
    protobuf field, that a model opting in to batching can be batched), with the
    built-in plugins and the app's own, so mistakes point at the decorated line. Nothing
    installed is loaded at import time; installed type-mapping plugins are consulted when
    the server is built.
    """

    def __init__(
        self,
        *,
        plugins: Sequence[Any] = (),
        error_map: Mapping[type[BaseException], Status | str] | None = None,
        **batching: Any,
    ) -> None:
        self.batching = BatchSettings.from_knobs(batching, where="BlazeApp()")
        #: Plugins (modules or objects with hook implementations) this app needs.
        self.plugins = list(plugins)
        if error_map:
            # Exceptions the models raise → statuses, e.g. {ValueError: "INVALID_ARGUMENT"}.
            self.plugins.append(ErrorMap(error_map))
        self.registry = ModelRegistry()
        self._checker: Any = None
        self._installed_checker: Any = None

    @overload
    def model(self, name: F) -> F: ...

    @overload
    def model(
        self, name: str | None = None, *, version: str | int = DEFAULT_VERSION, streaming: bool | None = None,
        **batching: Any,
    ) -> Callable[[F], F]: ...

    def model(self, name: Any = None, **options: Any) -> Any:
        """Register a function or class as a model of this app; see :func:`blazerpc_core.model`."""
        if callable(name):
            return self.model()(name)

        def decorate(obj: F) -> F:
            model(name, **options)(obj)
            spec = as_spec(obj)
            spec.batching = spec.batching.merged_over(self.batching)
            self.add(spec)
            return obj

        return decorate

    def add(self, obj: Any) -> None:
        """Register a model made elsewhere (a decorated function or class, or a spec)."""
        spec = as_spec(obj)
        self.registry.register(spec)
        try:
            self._check(spec)
        except RegistrationError:
            self.registry.unregister(spec.name, spec.version)
            raise

    def _check(self, spec: ModelSpec) -> None:
        from blazerpc_core.build import Compiler
        from blazerpc_core.schema.builder import UnmappedType

        if self._checker is None:
            self._checker = Compiler.for_plugins(self.plugins)
        try:
            self._checker.compile(spec)
        except UnmappedType:
            # Only now, for an annotation no built-in or app plugin maps, are installed
            # plugins consulted (most apps never load one at import).
            if self._installed_checker is None:
                self._installed_checker = Compiler.for_plugins(self.plugins, installed=True)
            self._installed_checker.compile(spec)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.registry)

    def __blazerpc_models__(self) -> tuple[list[ModelSpec], list[Any]]:
        """The app's models and the plugins they need (how targets and the server read an app)."""
        return list(self.registry), list(self.plugins)
