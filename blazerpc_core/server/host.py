"""The model host: which model instances serve, their states, and the schema they are served with.

One table maps (name, version) to a :class:`ModelEntry`: the compiled model, its live
instance and runner, its state (``LOADING``, ``READY``, ``UNLOADING``, ``FAILED``) and
counters. Every change (a model loaded, reloaded, unloaded, a default version switched)
is made beside the running models and then swapped in at once: the schema is assembled
again in a fresh descriptor pool (pools cannot forget files) and listeners (the
inference routes, health) are told. A call is admitted against one entry and finishes
on it; a replaced entry is retired (runner stopped, instance closed) when its last
admitted call has finished.

Instances are created (a class's ``__init__``), warmed (``warmup()``) and closed
(``close()``) in the model pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from blazerpc_core.errors import AlreadyExists, BlazeError, NotFound, RegistrationError
from blazerpc_core.method import SERVICE_FULL_NAME, CompiledModel, Schema
from blazerpc_core.registry import ModelRegistry
from blazerpc_core.runtime.policy import Runner
from blazerpc_core.schema.builder import assemble_schema
from blazerpc_core.schema.compat import Numbering
from blazerpc_core.spec import Loaded, ModelSpec

log = logging.getLogger("blazerpc.models")

#: Health key of one model: SERVING while its default version is READY.
MODEL_HEALTH_PREFIX = "blazerpc.model."


class ModelState(enum.StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Origin:
    """Where a model came from, so a reload can go back there.

    ``kind`` is ``target`` (a command-line TARGET), ``repository`` (an entry of
    ``--model-repository``, ``source`` relative to it), ``package`` (an installed
    ``blazerpc.models`` entry point), ``app`` (objects handed to the server in code) or
    ``plugin`` (``blazerpc_register_models``). The last two cannot be resolved again: a
    reload makes new instances of the same models.
    """

    source: str
    kind: str = "target"

    @property
    def reloadable(self) -> bool:
        return self.kind in ("target", "repository", "package")


#: Turns a management ``source`` (origin None) or a known origin (a reload) into models.
Resolve = Callable[[str, "Origin | None"], tuple[Origin, list[ModelSpec]]]


class ModelEntry:
    """One model version as served: compiled model, instance, runner, state and counters."""

    def __init__(self, spec: ModelSpec, model: CompiledModel, origin: Origin) -> None:
        self.spec = spec
        self.model = model
        self.origin = origin
        self.state = ModelState.LOADING
        self.error = ""
        self.loaded: Loaded | None = None
        self.runner: Runner | None = None
        self.inflight = 0
        self.calls = 0
        self.failures = 0
        self.load_seconds = 0.0
        self.warm_seconds = 0.0
        #: Set once its runner stopped and its instance closed: calls go to its successor.
        self.retired = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def key(self) -> tuple[str, str]:
        return (self.spec.name, self.spec.version)

    @property
    def label(self) -> str:
        return self.spec.label

    def enter(self) -> None:
        """A call was admitted against this entry."""
        self.inflight += 1
        self._idle.clear()

    def exit(self, ok: bool) -> None:
        self.inflight -= 1
        self.calls += 1
        self.failures += not ok
        if self.inflight == 0:
            self._idle.set()

    async def drained(self) -> None:
        """Until no admitted call is left (checked again after a turn of the loop, for calls just routed)."""
        while True:
            await self._idle.wait()
            await asyncio.sleep(0)
            if self.inflight == 0:
                return


class ModelHost:
    """Owns the served models; see the module docstring.

    ``compile`` turns a spec into its compiled model (cached), ``make_runner`` builds the
    runner for an instance, and ``resolve`` turns a management source into specs.
    """

    def __init__(
        self,
        *,
        compile: Callable[[ModelSpec], CompiledModel],
        make_runner: Callable[[CompiledModel, Loaded], Runner],
        resolve: Resolve,
        pool: Executor,
    ) -> None:
        self._compile = compile
        self._make_runner = make_runner
        self.resolve_source = resolve
        self._pool = pool
        #: The models the schema serves (LOADING and READY ones).
        self.registry = ModelRegistry()
        self.entries: dict[tuple[str, str], ModelEntry] = {}
        #: Models that failed to load and are not served, for status listings.
        self.failed: dict[tuple[str, str], ModelEntry] = {}
        #: Models being loaded by a change not yet swapped in, for status listings.
        self.loading: dict[tuple[str, str], ModelEntry] = {}
        self.schema: Schema = assemble_schema({}, [])
        #: Field numbers kept across every schema served (the lock's, then those given since):
        #: a reload never renumbers a field, and a change that breaks clients is refused.
        self.numbering = Numbering()
        #: Called after every swap, with the new schema.
        self.listeners: list[Callable[[Schema], None]] = []
        #: Names of every service the server hosts (for reflection), set by the server.
        self.services: list[str] = [SERVICE_FULL_NAME]
        self.lock = asyncio.Lock()
        self._files: list[Any] = []
        self._retiring: set[asyncio.Task[None]] = set()

    # -- Descriptors (what reflection reads) ----------------------------------------------

    @property
    def pool(self) -> Any:
        return self.schema.pool

    def service_names(self) -> list[str]:
        return list(self.services)

    def add_file(self, file: Any) -> None:
        """Keep a plugin service's file in every pool the schema is assembled into (for reflection)."""
        self._files.append(file)
        self.schema.pool.Add(file)

    # -- building the table ---------------------------------------------------------------

    def add(self, spec: ModelSpec, origin: Origin) -> ModelEntry:
        """Register a model to load (before start, or as part of a change); compiles it once."""
        model = self._compile(spec)
        self.registry.register(spec)
        entry = self.entries[(spec.name, spec.version)] = ModelEntry(spec, model, origin)
        return entry

    def set_defaults_from(self, registry: ModelRegistry) -> None:
        for name in registry.names():
            chosen = registry.default(name)
            if self.registry.get(name, chosen.version) is not None:
                self.registry.set_default(name, chosen.version)

    def entry(self, name: str, version: str | None = None) -> ModelEntry | None:
        """The served entry of ``name`` (its default version when ``version`` is empty)."""
        if not version:
            spec = self.registry.find_default(name)
            if spec is None:
                return None
            version = spec.version
        return self.entries.get((name, version))

    def matching(self, name: str, version: str | None) -> list[ModelEntry]:
        """Served entries of ``name``: one version, or all of them when ``version`` is empty."""
        if version:
            found = self.entries.get((name, version))
            return [found] if found is not None else []
        return [self.entries[(s.name, s.version)] for s in self.registry.versions(name)]

    def all_entries(self) -> list[ModelEntry]:
        """Served, loading and failed entries, by name and version."""
        served = [self.entries[(s.name, s.version)] for s in self.registry]
        listed = {e.key: e for e in [*self.failed.values(), *self.loading.values(), *served]}
        return sorted(listed.values(), key=lambda e: (e.spec.name, e.spec.version))

    def rebuild(self) -> Schema:
        """Assemble the schema of the registered models in a fresh pool and tell the listeners."""
        return self._publish(self._assemble(self.entries, self.registry))

    def _assemble(self, entries: dict[tuple[str, str], ModelEntry], registry: ModelRegistry) -> Schema:
        """The schema of ``entries`` served as ``registry`` says, with every plugin service's file in its pool.

        Raises RegistrationError (changing nothing) when the models cannot be served
        together, e.g. a model's message name clashes with a plugin service's.
        """
        models = {key: entry.model for key, entry in entries.items()}
        schema = assemble_schema(models, registry.rpcs(), self.numbering.apply)
        for file in self._files:
            try:
                schema.pool.Add(file)
            except (TypeError, ValueError) as exc:
                raise RegistrationError(
                    f"the models' protobuf names clash with service file {file.name!r}: {exc}; rename the model"
                ) from None
        return schema

    def _publish(self, schema: Schema) -> Schema:
        self.schema = schema
        self.numbering.remember(schema.file, self.registry.rpcs())
        for listener in self.listeners:
            listener(schema)
        return schema

    # -- instances -------------------------------------------------------------------------

    async def _in_pool(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.wrap_future(self._pool.submit(fn))

    async def start_entry(self, entry: ModelEntry) -> None:
        """Create, warm and start one entry's instance; on failure the entry is FAILED (and raises)."""
        spec = entry.spec
        try:
            started = time.perf_counter()
            loaded: Loaded = await self._in_pool(spec.instantiate)
            entry.load_seconds = time.perf_counter() - started
            if loaded.warmup is not None:
                started = time.perf_counter()
                await self._in_pool(loaded.warmup)
                entry.warm_seconds = time.perf_counter() - started
            entry.loaded = loaded
            runner = self._make_runner(entry.model, loaded)
            await runner.start()
            entry.runner = runner
        except Exception as exc:
            entry.state = ModelState.FAILED
            entry.error = f"{type(exc).__name__}: {exc}"
            if entry.loaded is not None:
                await self._close_instance(entry)
            raise
        entry.state = ModelState.READY

    async def load_all(self, *, skip_failures: bool, report: Callable[[ModelEntry], None]) -> list[ModelEntry]:
        """Start every LOADING entry (at server start), one after another; returns the ones that failed.

        A failed model is reported and removed from the schema when ``skip_failures``;
        otherwise the first failure raises.
        """
        failed = []
        for entry in [e for e in self.entries.values() if e.state is ModelState.LOADING]:
            try:
                await self.start_entry(entry)
            except Exception:
                report(entry)
                if not skip_failures:
                    raise
                failed.append(entry)
                self._forget(entry)
                self.failed[entry.key] = entry
                continue
            report(entry)
        if failed:
            self.rebuild()
        return failed

    def _forget(self, entry: ModelEntry) -> None:
        self.entries.pop(entry.key, None)
        if self.registry.get(*entry.key) is not None:
            self.registry.unregister(*entry.key)

    async def retire(self, entry: ModelEntry) -> None:
        """Once its admitted calls finished: stop the runner (queued work done) and close the instance."""
        await entry.drained()
        entry.retired = True
        if entry.runner is not None:
            await entry.runner.stop()
        await self._close_instance(entry)

    def retire_later(self, entry: ModelEntry) -> None:
        task = asyncio.get_running_loop().create_task(self.retire(entry), name=f"blazerpc-retire-{entry.label}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _close_instance(self, entry: ModelEntry) -> None:
        loaded, entry.loaded = entry.loaded, None
        if loaded is None or loaded.close is None:
            return
        try:
            await self._in_pool(loaded.close)
        except Exception:
            log.warning("close() of model %s raised", entry.label, exc_info=True)

    async def close(self) -> None:
        """Stop every runner and close every instance (the server is stopping)."""
        for entry in list(self.entries.values()):
            if entry.runner is not None:
                await entry.runner.stop()
        for task in list(self._retiring):
            task.cancel()
        for entry in list(self.entries.values()):
            await self._close_instance(entry)

    # -- changes while serving (the management service) ----------------------------------

    async def load(self, source: str) -> list[ModelEntry]:
        """Load every model ``source`` names, warm them, then serve them all at once.

        Refuses (AlreadyExists) a model already served and (RegistrationError) one whose
        rpc or message names would collide; a model that fails to start fails the whole
        load and nothing changes.
        """
        async with self.lock:
            origin, specs = await self._resolve(source, None)
            registry = self.registry.copy()
            for spec in specs:
                if self.entries.get((spec.name, spec.version)) is not None:
                    raise AlreadyExists(f"model {spec.label} is already loaded; reload it instead")
                registry.register(spec)
            fresh = [ModelEntry(spec, self._compile(spec), origin) for spec in specs]
            entries = {**self.entries, **{entry.key: entry for entry in fresh}}
            schema = self._assemble(entries, registry)
            self.loading.update({entry.key: entry for entry in fresh})
            try:
                await self._start_all(fresh)
            finally:
                for entry in fresh:
                    self.loading.pop(entry.key, None)
            self.registry, self.entries = registry, entries
            for entry in fresh:
                self.failed.pop(entry.key, None)
            self._publish(schema)
            return fresh

    async def reload(self, name: str, version: str | None) -> list[ModelEntry]:
        """New instances of ``name`` (one version, or all), warmed beside the old ones, then swapped in.

        A reloadable source is resolved again (a changed file is imported anew), so a
        reload may change the signature; the schema follows. If anything fails, the old
        instances keep serving and the error is raised.
        """
        async with self.lock:
            current = self.matching(name, version)
            if not current:
                raise NotFound(f"model {name!r}{f' version {version!r}' if version else ''} is not loaded")
            replacements: list[tuple[ModelEntry, ModelEntry]] = []
            resolved: dict[Origin, list[ModelSpec]] = {}
            for old in current:
                spec = old.spec
                if old.origin.reloadable:
                    if old.origin not in resolved:
                        resolved[old.origin] = (await self._resolve(old.origin.source, old.origin))[1]
                    spec = _pick(resolved[old.origin], old.spec)
                replacements.append((old, ModelEntry(spec, self._compile(spec), old.origin)))
            registry = self.registry.copy()
            entries = dict(self.entries)
            for old, new in replacements:
                registry.unregister(*old.key)
                registry.register(new.spec)
                entries[new.key] = new
            if (chosen := self.registry.chosen_default(name)) is not None and registry.get(name, chosen):
                registry.set_default(name, chosen)
            schema = self._assemble(entries, registry)
            await self._start_all([new for _, new in replacements])
            self.registry, self.entries = registry, entries
            self._publish(schema)
            for old, new in replacements:
                old.state = ModelState.UNLOADING
                if new.spec is old.spec and old.spec.factory is None and old.loaded is not None:
                    old.loaded.close = None  # one function object serves both: it is not retired
                self.retire_later(old)
            return [new for _, new in replacements]

    async def unload(self, name: str, version: str | None) -> list[ModelEntry]:
        """Stop serving ``name`` (one version, or all); calls already admitted finish first."""
        async with self.lock:
            gone = self.matching(name, version)
            if not gone:
                raise NotFound(f"model {name!r}{f' version {version!r}' if version else ''} is not loaded")
            registry = self.registry.copy()
            entries = dict(self.entries)
            for entry in gone:
                registry.unregister(*entry.key)
                del entries[entry.key]
            schema = self._assemble(entries, registry)
            self.registry, self.entries = registry, entries
            for entry in gone:
                entry.state = ModelState.UNLOADING
            self._publish(schema)
            for entry in gone:
                self.retire_later(entry)
            return gone

    async def set_default(self, name: str, version: str) -> ModelEntry:
        """Make ``version`` the one ``Predict<Pascal>`` serves."""
        async with self.lock:
            entry = self.entries.get((name, version))
            if entry is None:
                raise NotFound(f"model {name!r} version {version!r} is not loaded")
            registry = self.registry.copy()
            registry.set_default(name, version)
            schema = self._assemble(self.entries, registry)
            self.registry = registry
            self._publish(schema)
            return entry

    async def _resolve(self, source: str, origin: Origin | None) -> tuple[Origin, list[ModelSpec]]:
        """The models a source names, resolved in the pool (it imports code and may load files)."""
        found: tuple[Origin, list[ModelSpec]] = await self._in_pool(lambda: self.resolve_source(source, origin))
        if not found[1]:
            raise NotFound(f"source {source!r} defines no model")
        return found

    async def _start_all(self, fresh: Iterable[ModelEntry]) -> None:
        started: list[ModelEntry] = []
        try:
            for entry in fresh:
                await self.start_entry(entry)
                started.append(entry)
        except Exception:
            for entry in started:
                if entry.runner is not None:
                    await entry.runner.stop()
                await self._close_instance(entry)
            raise


def _pick(specs: list[ModelSpec], old: ModelSpec) -> ModelSpec:
    for spec in specs:
        if (spec.name, spec.version) == (old.name, old.version):
            return spec
    raise BlazeError(f"its source no longer defines model {old.label}")
