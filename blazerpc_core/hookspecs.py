"""Every hook a blazerpc plugin can implement: the plugin contract.

Hooks configure the server while it is built; none is called per request. They come in
three shapes:

* ``register`` hooks receive a callback that validates at once, so an error points at
  the plugin line that caused it;
* first-answer selectors (``firstresult``): the first non-None answer wins, and the
  built-in answers are ``trylast`` so any third-party plugin overrides them;
* collectors and lifecycle hooks, whose answers are all used (lifecycle hooks may
  return awaitables; the server awaits them).

Implement a hook by decorating a function named exactly like the spec with
:data:`blazerpc_core.hookimpl`; a misspelled name fails loudly when the plugin loads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from blazerpc_core.markers import hookspec

if TYPE_CHECKING:
    import click

    from blazerpc_core.call import Middleware
    from blazerpc_core.context import ServerContext
    from blazerpc_core.runtime.policy import BatchingPolicy
    from blazerpc_core.schema.fields import FieldMapping, TypeContext
    from blazerpc_core.settings import ServeSettings
    from blazerpc_core.spec import ModelSpec



# --- registration -------------------------------------------------------------------


@hookspec
def blazerpc_register_models(register: Callable[[Any], None]) -> None:
    """Add models to the server.

    Call ``register(model)`` once per model, where ``model`` is a function decorated
    with :func:`blazerpc_core.model` (or its :class:`ModelSpec`). ``register`` raises
    :class:`~blazerpc_core.errors.RegistrationError` at once for a duplicate or invalid
    name. Called once while the registry is built; every implementation runs.
    """


@hookspec(firstresult=True)
def blazerpc_load_target(target: str, settings: ServeSettings) -> Sequence[Any] | None:
    """Turn a TARGET (or a model-repository entry) into models, for target forms the core does not know.

    Return the models the target names (specs, decorated functions or classes, or apps,
    whose plugins are then loaded too), or None when the target is not yours (a
    ``module:attr`` or ``.py`` target is handled by the core's default). Called once
    per TARGET on the command line, and again whenever a running server loads or
    reloads that source. Stops at the first non-None result.
    """


# --- schema -------------------------------------------------------------------------


@hookspec(firstresult=True)
def blazerpc_map_type(annotation: Any, context: TypeContext) -> FieldMapping | None:
    """Map a parameter or return annotation to a protobuf field.

    Return a :class:`~blazerpc_core.schema.fields.FieldMapping` (field type plus the
    wire/Python converters), or None when the annotation is not yours. Use
    ``context.resolve(inner)`` for the element type of a container and
    ``context.declare_message`` / ``context.declare_enum`` for types you define.
    Called once per annotation while the schema is built. Stops at the first
    non-None result; the built-in mappings run last.
    """


# --- runtime ------------------------------------------------------------------------


@hookspec(firstresult=True)
def blazerpc_batching_policy(spec: ModelSpec, settings: ServeSettings) -> BatchingPolicy | None:
    """Choose how calls to ``spec`` are scheduled: one call per request, or batched.

    Return a :class:`~blazerpc_core.runtime.policy.BatchingPolicy`, or None to leave the
    choice to the next plugin. Called once per model while the server is built. Stops
    at the first non-None result; the built-in policies run last.
    """


@hookspec
def blazerpc_middleware(settings: ServeSettings) -> Sequence[Middleware] | None:
    """Contribute middleware that wraps every inference call.

    Return a list of middleware (outermost first) or None. Results of all plugins are
    joined in plugin registration order (built-in plugins first), and the chain is
    composed once at build time. Called once while the server is built.
    """


@hookspec
def blazerpc_services(context: ServerContext) -> Sequence[Any] | None:
    """Contribute extra gRPC services (grpclib servables) to host beside inference.

    Return a list of objects with a ``__mapping__()`` method (grpclib services). Their
    method paths must not collide with any other service's; a collision fails at build
    time. They are listed by server reflection. Called once while the server is built.
    """


# --- command line -------------------------------------------------------------------


@hookspec
def blazerpc_cli_options() -> Sequence[click.Option] | None:
    """Add options to ``blazerpc serve`` (and ``proto`` and ``models``, which load TARGETs alike).

    Return a list of ``click.Option``. Their values land in
    ``ServeSettings.extra[<option name>]``. Give each an ``envvar`` named
    ``BLAZERPC_<NAME>`` so operators can set it from the environment. An option whose
    name or flag is taken is skipped: the core's own options (``--name`` is
    ``ServeSettings.model_name``) come first, then the first plugin to declare it; every
    plugin reads that declaration's value. Called once when the command line is built.
    """


# --- lifecycle ----------------------------------------------------------------------


@hookspec
def blazerpc_startup(context: ServerContext) -> Awaitable[None] | None:
    """Called once after the server has bound its port, before health reports SERVING.

    May return an awaitable (it is awaited). Until every startup hook finishes, health
    answers NOT_SERVING and calls get UNAVAILABLE: load and warm models here.
    """


@hookspec
def blazerpc_shutdown(context: ServerContext) -> Awaitable[None] | None:
    """Called once after in-flight calls have drained, before the process exits.

    May return an awaitable (it is awaited). Use it to release resources.
    """
