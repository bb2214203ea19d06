"""Where models come from: command-line targets, installed model packages, management requests.

Every source ends as :class:`Discovered` (models plus the plugins they need) that the
assembly registers. A target is offered to the ``blazerpc_load_target`` hook (model-file
plugins first, Python targets last); with no target, every ``blazerpc.models`` entry
point is served.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from blazerpc_core.errors import PluginError, RegistrationError
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


def from_objects(source: str, obj: Any) -> Discovered:
    """An app, a model, or a list of them, as a source."""
    specs, plugins = specs_of(obj)
    return Discovered(source, tuple(specs), tuple(plugins))


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
        found.append(from_objects(source, obj))
    return found


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
    return from_objects(target, answer)


def discover(targets: Iterable[str], settings: ServeSettings, hooks: Hooks) -> list[Discovered]:
    """Models named by ``targets`` (or every installed model package when there are none)."""
    targets = list(targets)
    if not targets:
        return installed_models()
    return [load_target(target, settings, hooks) for target in targets]
