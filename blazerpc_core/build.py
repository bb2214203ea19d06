"""The one way a server is built: plugin manager → registry → compiled models → runners → services → server.

The command line, ``blazerpc_core.testing``, ``BlazeApp``'s checks, the benchmarks and an
embedding program all come through here, so a model served any of these ways behaves
the same::

    from blazerpc_core import build_server, ServeSettings

    server = build_server(app, ServeSettings(port=50051))
    async with server:                      # start: bind, load and warm models, SERVING
        await server.wait_stopped()         # until stop() (or use serve_forever() for signals)

Every plugin (an app's included) is registered before any hook runs, except the target
loader that finds the apps in the first place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from blazerpc_core.context import ServerContext
from blazerpc_core.errors import PluginError, RegistrationError
from blazerpc_core.hooks import Hooks
from blazerpc_core.method import CompiledModel, Schema
from blazerpc_core.plugins import disabled_from_env, make_plugin_manager, plugin_name
from blazerpc_core.registry import ModelRegistry
from blazerpc_core.runtime.executor import Invoker, ModelPool, auto_inline_budget, default_model_concurrency
from blazerpc_core.runtime.plan import batch_plan
from blazerpc_core.runtime.policy import Runner
from blazerpc_core.schema.builder import Renumber, assemble_schema, compile_model
from blazerpc_core.schema.compat import Numbering, exported_differences
from blazerpc_core.schema.lock import Lock, read_lock
from blazerpc_core.schema.proto_text import render_proto
from blazerpc_core.server.calls import CallSteps
from blazerpc_core.server.foreign import ModelCalls
from blazerpc_core.server.gate import Gate
from blazerpc_core.server.host import ModelHost, Origin
from blazerpc_core.server.lifecycle import BlazeServer
from blazerpc_core.server.status import ErrorMapper
from blazerpc_core.settings import ServeSettings
from blazerpc_core.sources import Discovered, SourceResolver, discover, from_objects, load_target
from blazerpc_core.spec import Loaded, ModelSpec

log = logging.getLogger("blazerpc")


class Compiler:
    """Compiles each model once for a set of type-mapping plugins (the compile is kept on the spec)."""

    def __init__(self, hooks: Hooks) -> None:
        self._map_type = hooks.map_type
        self._key = hooks.map_type_key()

    @classmethod
    def for_plugins(cls, plugins: Sequence[Any], *, installed: bool = False) -> Compiler:
        """A compiler with the built-in plugins and ``plugins``: what ``BlazeApp`` checks with.

        With ``installed``, installed plugins too, a broken one logged and left out (an app
        being imported must not fail for a plugin it does not use).
        """
        return cls(Hooks(make_plugin_manager(plugins=plugins, load_entry_points=installed, skip_broken=True)))

    def compile(self, spec: ModelSpec) -> CompiledModel:
        """The compiled model; refuses what cannot be served (types, batching opt-in) naming the model."""
        compiled = spec.compiled.get(self._key)
        if compiled is None:
            compiled = compile_model(spec, self._map_type)
            batch_plan(compiled)  # a model that opts in to batching but cannot be batched fails here
            spec.compiled[self._key] = compiled
        assert isinstance(compiled, CompiledModel)
        return compiled


@dataclass
class Assembly:
    """The plugins, settings and models of one server, before anything runs."""

    hooks: Hooks
    settings: ServeSettings
    found: list[Discovered]
    registry: ModelRegistry
    compiler: Compiler
    #: Where each registered model came from, by (name, version).
    origins: dict[tuple[str, str], Origin] = field(default_factory=dict)
    #: The field numbers promised: ``--schema-lock``, or the locks model packages ship (docs/schema.md).
    lock: Lock | None = None

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        return self.hooks.pm

    def compiled(self) -> dict[tuple[str, str], CompiledModel]:
        return {(spec.name, spec.version): self.compiler.compile(spec) for spec in self.registry}

    def numbering(self) -> Numbering:
        """The numbering a server of these models starts with: the lock's numbers, breaking changes refused."""
        return Numbering(self.lock, allow_breaking=self.settings.allow_breaking)

    def schema(self, number: Renumber | None = None) -> Schema:
        """The schema these models are served with (what ``blazerpc proto`` writes).

        Numbered through the lock (a breaking change raises) unless ``number`` numbers it.
        """
        return assemble_schema(self.compiled(), self.registry.rpcs(), number or self.numbering().apply)


def assemble(
    models: Any = None,
    *,
    targets: Iterable[str] | None = None,
    settings: ServeSettings | None = None,
    plugins: Sequence[Any] = (),
    load_entry_points: bool = True,
    hooks: Hooks | None = None,
    found: list[Discovered] | None = None,
) -> Assembly:
    """Plugins, registry and compiled models for ``models`` (an app, a model, a list) or ``targets``.

    With neither, the models of ``--model-repository`` are served, or else every installed
    ``blazerpc.models`` entry point (when ``load_entry_points``). ``hooks`` and ``found``
    reuse a plugin manager and sources already made (the command line loads TARGETs before
    it parses the options their plugins add). Raises :class:`RegistrationError` or
    :class:`PluginError` naming what is wrong.
    """
    settings = settings or ServeSettings()
    disabled = set(settings.disabled_plugins) | set(disabled_from_env())
    if found is None and models is not None:
        found = [from_objects("app", models)]
    if hooks is None:
        early_plugins = [p for item in found or () for p in item.plugins]
        hooks = Hooks(make_plugin_manager(
            disabled=disabled, plugins=[*early_plugins, *plugins], load_entry_points=load_entry_points
        ))
    if found is None:
        wanted = targets or settings.model_repository or load_entry_points
        found = discover_sources(targets or (), settings, hooks) if wanted else []
    for item in found:
        for plugin in item.plugins:
            name = plugin_name(plugin)
            if name not in disabled:
                hooks.register(plugin, name)
    _check_disabled_names(hooks.pm, disabled, load_entry_points)
    registry = ModelRegistry()
    origins: dict[tuple[str, str], Origin] = {}
    for item in found:
        for spec in item.specs:
            registry.register(spec)
            origins[(spec.name, spec.version)] = item.origin
    hooks.register_models(registry.register)
    assembly = Assembly(hooks, settings, found, registry, Compiler(hooks), origins, schema_lock(settings, found))
    assembly.compiled()
    return assembly


def schema_lock(settings: ServeSettings, found: Iterable[Discovered]) -> Lock | None:
    """``--schema-lock``, or else every lock the model packages served ship, as one; None without any."""
    if settings.schema_lock:
        return read_lock(settings.schema_lock)
    lock = None
    for item in found:
        if item.lock:
            shipped = read_lock(item.lock)
            lock = shipped if lock is None else lock.merged(shipped)
    return lock


def _warn_unlocked(assembly: Assembly) -> None:
    """Served without a lock: say so when a lock or an exported .proto beside a TARGET file differs."""
    directories = []
    for item in assembly.found:
        where = item.source if Path(item.source).exists() else item.source.partition(":")[0]
        if item.kind == "target" and Path(where).exists():  # a file.py[:attr] or model-file TARGET
            directories.append(Path(where).resolve().parent)
    if directories:
        schema = assembly.schema()
        for warning in exported_differences(directories, schema.file, assembly.registry.rpcs(),
                                            render_proto(schema.file)):
            log.warning("%s", warning)


def discover_sources(targets: Iterable[str], settings: ServeSettings, hooks: Hooks) -> list[Discovered]:
    """The models TARGETs name; with none, the model repository's, or else the installed model packages."""
    targets = list(targets)
    if targets or not settings.model_repository:
        for target in targets or ["installed model packages"]:
            log.info("loading %s", target)
        return discover(targets, settings, hooks)
    return repository_sources(Path(settings.model_repository), settings, hooks)


def repository_sources(root: Path, settings: ServeSettings, hooks: Hooks) -> list[Discovered]:
    """Every entry of a model repository some plugin can load; others are skipped with a log line."""
    if not root.is_dir():
        raise RegistrationError(f"model repository {str(root)!r} is not a directory")
    found = []
    for path in sorted(root.iterdir()):
        if path.name.startswith((".", "_")):
            continue
        source = path.name
        log.info("loading %s from the model repository", source)
        try:
            item = load_target(str(path), settings, hooks)
        except RegistrationError as exc:
            log.warning("skipping %s in the model repository: %s", source, exc)
            continue
        found.append(Discovered(source, item.specs, item.plugins, "repository"))
    return found


def _check_disabled_names(pm: pluggy.PluginManager, disabled: set[str], complete: bool) -> None:
    if not complete:
        return
    known = {name for name, _ in pm.list_name_plugin()}
    unknown = sorted(disabled - known)
    if unknown:
        raise PluginError(
            f"cannot disable plugin {unknown[0]!r}: no plugin has that name. Known plugins: "
            + ", ".join(sorted(known))
        )


def build_server(
    models: Any = None,
    settings: ServeSettings | None = None,
    *,
    targets: Iterable[str] | None = None,
    plugins: Sequence[Any] = (),
    load_entry_points: bool = True,
    assembly: Assembly | None = None,
) -> BlazeServer:
    """A server for ``models`` or ``targets`` (see :func:`assemble`), ready to start."""
    if assembly is None:
        assembly = assemble(
            models, targets=targets, settings=settings, plugins=plugins, load_entry_points=load_entry_points
        )
    return _server(assembly)


def _server(assembly: Assembly) -> BlazeServer:
    settings, hooks = assembly.settings, assembly.hooks
    if not len(assembly.registry) and not settings.model_repository:
        raise RegistrationError("no models to serve")
    pool = ModelPool(settings.max_workers)
    concurrency = settings.max_model_threads or default_model_concurrency(pool.max_threads)
    errors = ErrorMapper(hide_details=settings.hide_error_details, full_details=settings.full_error_details)
    context_holder: list[ServerContext] = []

    def make_runner(model: CompiledModel, loaded: Loaded) -> Runner:
        spec = model.spec
        budget_us = settings.inline_budget_us  # None: the server measured its pool at start (measure_hop)
        inline_budget = auto_inline_budget(pool) if budget_us is None else budget_us / 1e6
        invoker = Invoker(
            loaded.func, is_async=spec.is_async, pool=pool, inline_budget=inline_budget,
            max_concurrency=concurrency, label=spec.label,
        )
        policy = hooks.batching_policy(spec, settings)
        return policy.create_runner(model, invoker, context_holder[0].batch_events)

    host = ModelHost(
        compile=assembly.compiler.compile,
        make_runner=make_runner,
        resolve=SourceResolver(settings, hooks),
        pool=pool,
    )
    for spec in assembly.registry:
        host.add(spec, assembly.origins.get((spec.name, spec.version), Origin("plugin", "plugin")))
    host.set_defaults_from(assembly.registry)
    host.numbering = assembly.numbering()  # the first schema (BlazeServer's) refuses what breaks the lock
    if assembly.lock is None:
        _warn_unlocked(assembly)
    context = ServerContext(settings=settings, models=host.registry, pool=pool, errors=errors, descriptors=host)
    context_holder.append(context)
    context.host = host
    context.middleware = middleware = hooks.middleware(settings)
    steps = CallSteps(gate=Gate(), errors=errors, host=host, max_message_bytes=settings.max_message_bytes)
    context.calls = ModelCalls(steps, middleware)
    services = hooks.services(context)
    return BlazeServer(context, host, steps, services, startup=hooks.startup, shutdown=hooks.shutdown)


def run(
    models: Any = None, *, targets: Iterable[str] | None = None, plugins: Sequence[Any] = (), **settings: Any
) -> None:
    """Serve ``models`` (or ``targets``) until SIGTERM/SIGINT, as ``blazerpc serve`` does; blocks.

    ``settings`` are :class:`~blazerpc_core.settings.ServeSettings` fields::

        blazerpc_core.run(app, port=50051, grace_period=5)
    """
    server = build_server(models, ServeSettings(**settings), targets=targets, plugins=plugins)
    asyncio.run(server.serve_forever())
