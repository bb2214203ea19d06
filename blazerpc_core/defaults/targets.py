"""Default plugin ``python-targets``: ``module``, ``module:attr``, ``path/to/file.py`` and ``file.py:attr``.

Answers ``blazerpc_load_target`` last, so a plugin that knows a target form (a model
file) goes first. A module target serves every app and every decorated model it
defines, with the plugins its apps ask for. A ``.py`` file is imported afresh each time
it is loaded, which is what a reload of a model file needs.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from blazerpc_core.errors import RegistrationError
from blazerpc_core.markers import hookimpl
from blazerpc_core.settings import ServeSettings
from blazerpc_core.spec import MODELS_ATTR, SPEC_ATTR

_imports = itertools.count(1)


def module_models(module: ModuleType) -> list[Any]:
    """Every app (an object with ``__blazerpc_models__``) and every decorated model the module defines.

    A model that belongs to one of the module's apps is served through its app only.
    """
    found: list[Any] = []
    seen: set[int] = set()
    for value in vars(module).values():
        if callable(getattr(value, MODELS_ATTR, None)) and not isinstance(value, type):
            found.append(value)
            seen.update(id(spec) for spec in getattr(value, MODELS_ATTR)()[0])
    for value in vars(module).values():
        spec = getattr(value, SPEC_ATTR, None)
        if spec is not None and id(spec) not in seen:
            found.append(spec)
            seen.add(id(spec))
    if not found:
        raise RegistrationError(f"{module.__name__} defines no BlazeApp and no model")
    return found


def import_file(path: Path) -> ModuleType:
    """Import ``path`` as a fresh module (a second import runs the file again)."""
    name = f"blazerpc_target_{_identifier(path.stem)}_{next(_imports)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RegistrationError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    directory = str(path.parent.resolve())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _identifier(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def load_python_target(target: str) -> list[Any]:
    """Import a ``module[:attr]`` or ``file.py[:attr]`` target; returns the apps and models it names."""
    where, _, attr = target.partition(":")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise RegistrationError(f"target {target!r}: no such file {where}")
        module = import_file(path)
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
        return module_models(module)
    try:
        return [getattr(module, attr)]
    except AttributeError:
        raise RegistrationError(f"target {target!r}: {where} has no attribute {attr!r}") from None


@hookimpl(trylast=True)
def blazerpc_load_target(target: str, settings: ServeSettings) -> list[Any] | None:
    return load_python_target(target)
