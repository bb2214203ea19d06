"""Every hook call goes through :class:`Hooks`: one typed method per hook.

pluggy calls implementations last-registered first; collectors here join answers in
registration order (built-in plugins first, then installed ones, then the app's), with
``tryfirst`` implementations before all others and ``trylast`` ones after.
Lifecycle hooks keep pluggy's order, so ``tryfirst``/``trylast`` decide who goes first,
and an awaitable answer is awaited before the next one runs. No other module calls
``pm.hook`` directly.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

from blazerpc_core.errors import PluginError, RegistrationError

if TYPE_CHECKING:
    import click

    from blazerpc_core.call import Middleware
    from blazerpc_core.context import ServerContext
    from blazerpc_core.runtime.policy import BatchingPolicy
    from blazerpc_core.schema.fields import FieldMapping, TypeContext
    from blazerpc_core.settings import ServeSettings
    from blazerpc_core.spec import ModelSpec


class Hooks:
    """The typed facade over one plugin manager."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._hook = pm.hook

    # -- registration ---------------------------------------------------------------

    def register_models(self, register: Callable[[Any], None]) -> None:
        self._hook.blazerpc_register_models(register=register)

    def load_target(self, target: str, settings: ServeSettings) -> list[ModelSpec] | None:
        answer = self._hook.blazerpc_load_target(target=target, settings=settings)
        return None if answer is None else list(answer)

    # -- schema ---------------------------------------------------------------------

    def map_type(self, annotation: Any, context: TypeContext) -> FieldMapping | None:
        mapping: FieldMapping | None = self._hook.blazerpc_map_type(annotation=annotation, context=context)
        return mapping

    def map_type_key(self) -> tuple[Any, ...]:
        """Identifies the type-mapping implementations, so a compile can be reused when they are the same."""
        return tuple(impl.function for impl in self._hook.blazerpc_map_type.get_hookimpls())

    # -- runtime --------------------------------------------------------------------

    def batching_policy(self, spec: ModelSpec, settings: ServeSettings) -> BatchingPolicy:
        policy: BatchingPolicy | None = self._hook.blazerpc_batching_policy(spec=spec, settings=settings)
        if policy is None:
            raise RegistrationError(f"no plugin chose a batching policy for model {spec.label}")
        return policy

    def middleware(self, settings: ServeSettings) -> list[Middleware]:
        """The chain, outermost first: ``tryfirst`` plugins, then the rest in registration order, then ``trylast``."""
        return self._collect("blazerpc_middleware", settings=settings)

    def services(self, context: ServerContext) -> list[Any]:
        return self._collect("blazerpc_services", context=context)

    # -- command line ---------------------------------------------------------------

    def cli_options(self) -> list[click.Option]:
        return self._collect("blazerpc_cli_options")

    def _collect(self, name: str, **kwargs: Any) -> list[Any]:
        """Every implementation's answer (a list or None), joined: ``tryfirst`` ones first, ``trylast`` ones last,
        registration order within each group."""
        impls = [i for i in getattr(self._hook, name).get_hookimpls() if not (i.wrapper or i.hookwrapper)]
        ordered = (
            [i for i in impls if i.tryfirst]
            + [i for i in impls if not (i.tryfirst or i.trylast)]
            + sorted((i for i in impls if i.trylast), key=impls.index, reverse=True)
        )
        joined: list[Any] = []
        for impl in ordered:
            answer = impl.function(*[kwargs[arg] for arg in impl.argnames])
            if answer:
                joined.extend(answer)
        return joined

    # -- lifecycle ------------------------------------------------------------------

    async def startup(self, context: ServerContext) -> None:
        """In pluggy's call order (``tryfirst``/``trylast`` respected), awaiting each answer in turn."""
        await _await_all(self._hook.blazerpc_startup(context=context))

    async def shutdown(self, context: ServerContext) -> None:
        await _await_all(self._hook.blazerpc_shutdown(context=context))

    # -- plugins --------------------------------------------------------------------

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Add a plugin (an app's) after the manager was made; a misspelled hook fails here."""
        if self.pm.is_registered(plugin):
            return
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f"plugin {name or getattr(plugin, '__name__', plugin)!r} is invalid: {exc}") from exc


async def _await_all(results: Sequence[Any]) -> None:
    for result in results:
        if inspect.isawaitable(result):
            await result
