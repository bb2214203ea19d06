"""Where models come from: command-line targets, installed model packages, management requests.

Every source ends as :class:`Discovered` (models plus the plugins they need) that the
assembly registers. A target is offered to the ``blazerpc_load_target`` hook (model-file
plugins first, Python targets last); with no target, every ``blazerpc.models`` entry
point is served.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blazerpc_core.errors import NotFound, PermissionDenied, PluginError, RegistrationError, client_text
from blazerpc_core.schema.lock import LOCK_NAME
from blazerpc_core.server.host import Origin
from blazerpc_core.spec import ModelSpec, specs_of

if TYPE_CHECKING:
    from blazerpc_core.hooks import Hooks
    from blazerpc_core.settings import ServeSettings

MODELS_GROUP = "blazerpc.models"


@dataclass(frozen=True)
class Discovered:
    """Models found at one source, with the plugins they need (an app's)."""

    source: str
    specs: tuple[ModelSpec, ...]
    plugins: tuple[Any, ...] = ()
    #: How the source can be found again (see ``server.host.Origin``).
    kind: str = "target"
    #: The schema lock a model package ships (``blaze_service.lock`` beside its entry point's module).
    lock: str | None = None

    @property
    def origin(self) -> Origin:
        return Origin(self.source, self.kind)


def from_objects(source: str, obj: Any, kind: str = "app") -> Discovered:
    """An app, a model, or a list of them, as a source."""
    specs, plugins = specs_of(obj)
    return Discovered(source, tuple(specs), tuple(plugins), kind)


def installed_models(names: Iterable[str] | None = None) -> list[Discovered]:
    """``blazerpc.models`` entry points (all, or the ``names`` given), loaded; an import error names the entry point.

    Each is found at source ``<distribution>:<entry point>``; a name given may be either form.
    """
    wanted = None if names is None else set(names)
    found = []
    for ep in entry_points(group=MODELS_GROUP):
        source = f"{ep.dist.name if ep.dist is not None else '?'}:{ep.name}"
        if wanted is not None and ep.name not in wanted and source not in wanted:
            continue
        try:
            obj = ep.load()
        except Exception as exc:
            raise PluginError(
                f"model entry point {ep.name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        found.append(replace(from_objects(source, obj, "package"), lock=shipped_lock(ep.module)))
    return found


def shipped_lock(module: str) -> str | None:
    """The lock file a model package ships as package data beside the module its entry point names."""
    path = getattr(sys.modules.get(module), "__file__", None)
    if not path:
        return None
    lock = Path(path).with_name(LOCK_NAME)
    return str(lock) if lock.is_file() else None


def entry_point_names() -> set[str]:
    """Installed model packages, by entry point name and by ``<distribution>:<entry point>``."""
    names = set()
    for ep in entry_points(group=MODELS_GROUP):
        names.add(ep.name)
        names.add(f"{ep.dist.name if ep.dist is not None else '?'}:{ep.name}")
    return names


def load_target(target: str, settings: ServeSettings, hooks: Hooks) -> Discovered:
    """The models one TARGET names, from the first plugin that knows its form."""
    answer = hooks.load_target(target, settings)
    if answer is None:
        raise RegistrationError(f"no plugin can load target {target!r}")
    return from_objects(target, answer, "target")


def discover(targets: Iterable[str], settings: ServeSettings, hooks: Hooks) -> list[Discovered]:
    """Models named by ``targets`` (or every installed model package when there are none)."""
    targets = list(targets)
    if not targets:
        return installed_models()
    return [load_target(target, settings, hooks) for target in targets]


class SourceResolver:
    """How a running server finds models by a management ``source``, and finds them again for a reload.

    A new source is an installed model package (an entry point name, or
    ``<distribution>:<name>``) or an entry of ``--model-repository`` (a path relative to it).
    A path that leaves the repository, whatever ``..``, symlinks or absolute form it uses,
    is PERMISSION_DENIED; one inside it that does not exist is NOT_FOUND. Command-line
    TARGETs are trusted: a reload resolves them as they were given.
    """

    def __init__(self, settings: ServeSettings, hooks: Hooks) -> None:
        self._settings = settings
        self._hooks = hooks
        repository = settings.model_repository
        self.repository = Path(os.path.realpath(repository)) if repository else None

    def __call__(self, source: str, origin: Origin | None = None) -> tuple[Origin, list[ModelSpec]]:
        if origin is not None and origin.kind == "target":
            return origin, self._register(load_target(origin.source, self._settings, self._hooks))
        if (origin is None and source in entry_point_names()) or (origin is not None and origin.kind == "package"):
            packages = installed_models([source])
            if not packages:
                raise NotFound(f"no installed model package is named {client_text(source)}")
            return packages[0].origin, self._register(packages[0])
        path = self.inside(source)
        relative = str(path.relative_to(self.repository)) if self.repository is not None else source
        return Origin(relative, "repository"), self._register(load_target(str(path), self._settings, self._hooks))

    def inside(self, source: str) -> Path:
        """The repository path ``source`` names, refusing one outside the repository."""
        if self.repository is None:
            raise NotFound(
                f"{client_text(source)} is not an installed model package, and the server has no "
                "--model-repository to look for it in"
            )
        candidate = Path(source) if os.path.isabs(source) else self.repository / source
        real = Path(os.path.realpath(candidate))
        if real != self.repository and self.repository not in real.parents:
            raise PermissionDenied(f"source {client_text(source)} is outside the model repository")
        if real == self.repository:
            raise PermissionDenied("the model repository itself is not a model source; name an entry in it")
        if not real.exists():
            raise NotFound(f"source {client_text(source)} does not exist in the model repository")
        return real

    def _register(self, found: Discovered) -> list[ModelSpec]:
        """A loaded app's plugins join the server (their type mappings and lifecycle hooks; middleware is fixed)."""
        for plugin in found.plugins:
            self._hooks.register(plugin)
        return list(found.specs)
