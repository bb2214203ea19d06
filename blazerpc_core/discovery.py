"""Finding models: command-line targets, ``blazerpc.models`` entry points, plugin hooks.

Also a default plugin: it answers ``blazerpc_load_target`` for Python targets
(``module:attr``, ``path/to/file.py``, ``path/to/file.py:attr``, ``module``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from blazerpc_core.app import BlazeApp
from blazerpc_core.errors import PluginError, RegistrationError
from blazerpc_core.hookspecs import hookimpl
from blazerpc_core.registry import SPEC_ATTR, ModelRegistry, ModelSpec, as_spec
from blazerpc_core.settings import ServeSettings

MODELS_GROUP = "blazerpc.models"


@dataclass(frozen=True)
class Discovered:
    """Models found, with where they came from (for ``blazerpc models`` and the banner)."""

    source: str
    specs: tuple[ModelSpec, ...]
    plugins: tuple[Any, ...] = ()


def specs_of(obj: Any) -> tuple[list[ModelSpec], list[Any]]:
    """Models (and plugins an app asks for) behind an object: an app, a model, or a list of them."""
    if isinstance(obj, BlazeApp):
        return list(obj), list(obj.plugins)
    if isinstance(obj, (list, tuple)):
        specs: list[ModelSpec] = []
        plugins: list[Any] = []
        for item in obj:
            s, p = specs_of(item)
            specs += s
            plugins += p
        return specs, plugins
    return [as_spec(obj)], []


def _module_models(module: ModuleType) -> tuple[list[ModelSpec], list[Any]]:
    apps = [v for v in vars(module).values() if isinstance(v, BlazeApp)]
    specs: list[ModelSpec] = []
    plugins: list[Any] = []
    for app in apps:
        specs += list(app)
        plugins += app.plugins
    in_apps = {id(s) for s in specs}
    for value in vars(module).values():
        spec = getattr(value, SPEC_ATTR, None)
        if isinstance(spec, ModelSpec) and id(spec) not in in_apps:
            specs.append(spec)
            in_apps.add(id(spec))
    if not specs:
        raise RegistrationError(f"{module.__name__} defines no BlazeApp and no model")
    return specs, plugins


def _import_file(path: Path) -> ModuleType:
    name = f"blazerpc_target_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RegistrationError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    directory = str(path.parent.resolve())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    spec.loader.exec_module(module)
    return module


def load_python_target(target: str) -> tuple[list[ModelSpec], list[Any]]:
    """Import a ``module[:attr]`` or ``file.py[:attr]`` target and return its models."""
    where, _, attr = target.partition(":")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise RegistrationError(f"target {target!r}: no such file {where}")
        module = _import_file(path)
    elif Path(where).exists():
        kind = "directory" if Path(where).is_dir() else "file"
        raise RegistrationError(
            f"target {target!r} is a {kind} that no installed plugin serves: Python targets are module:attr, "
            "path/to/file.py or path/to/file.py:attr, and model files need their framework plugin "
            "(blazerpc-onnx for .onnx, blazerpc-torch for .pt/.pt2, blazerpc-tf for a SavedModel directory)"
        )
    else:
        if "." not in sys.path and "" not in sys.path:
            sys.path.insert(0, ".")
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise RegistrationError(f"target {target!r}: cannot import {where!r}: {exc}") from exc
    if not attr:
        return _module_models(module)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise RegistrationError(f"target {target!r}: {where} has no attribute {attr!r}") from None
    return specs_of(obj)


@hookimpl(trylast=True)
def blazerpc_load_target(target: str, settings: ServeSettings) -> Sequence[ModelSpec] | None:
    specs, _ = load_python_target(target)
    return specs


def installed_models() -> list[Discovered]:
    """Every ``blazerpc.models`` entry point, loaded; an import error names the entry point."""
    found = []
    for ep in entry_points(group=MODELS_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:
            raise PluginError(
                f"model entry point {ep.name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        specs, plugins = specs_of(obj)
        dist = ep.dist.name if ep.dist is not None else "?"
        found.append(Discovered(f"{dist}:{ep.name}", tuple(specs), tuple(plugins)))
    return found


def discover(targets: Iterable[str], settings: ServeSettings, pm: pluggy.PluginManager) -> list[Discovered]:
    """Models named by ``targets`` (or every installed model package when there are none)."""
    targets = list(targets)
    if not targets:
        return installed_models()
    found = []
    for target in targets:
        if target.partition(":")[0].endswith(".py") or ":" in target:
            specs, plugins = load_python_target(target)
        else:
            answer = pm.hook.blazerpc_load_target(target=target, settings=settings)
            specs, plugins = list(answer or ()), []
        found.append(Discovered(target, tuple(specs), tuple(plugins)))
    return found


def build_registry(found: Iterable[Discovered], pm: pluggy.PluginManager) -> ModelRegistry:
    """One registry from discovered models and ``blazerpc_register_models``."""
    registry = ModelRegistry()
    for item in found:
        for spec in item.specs:
            registry.register(spec)
    pm.hook.blazerpc_register_models(register=registry.register)
    return registry
