"""What every plugin that serves model files shares: recognising its files, and naming the model.

A framework plugin answers ``blazerpc_load_target`` for its files (``model.onnx``,
``model.pt``, a SavedModel directory) and builds a callable from the file whose
signature describes its inputs and outputs (see :mod:`blazerpc_core.schema.signature`).
These helpers do the rest the same way for every framework: the model is named after
``--name`` or the file, and a name that is not a valid model name says how to choose
another. A callable with ``warmup()`` (and ``close()``) methods gets them called by the
server: warm-up before the model is ready, close when it is retired.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from blazerpc_core.errors import RegistrationError
from blazerpc_core.naming import DEFAULT_VERSION
from blazerpc_core.settings import BatchSettings
from blazerpc_core.spec import ModelSpec, make_spec


def model_file(
    target: str, suffixes: tuple[str, ...] = (), *, directory: Callable[[Path], bool] | None = None
) -> Path | None:
    """The path ``target`` names when it is one of this plugin's model files, else None.

    A file matches by suffix (case-insensitive); a directory matches when ``directory``
    says it is one of the plugin's (a SavedModel holds ``saved_model.pb``).
    """
    path = Path(target)
    if suffixes and path.suffix.lower() in {s.lower() for s in suffixes}:
        return path
    if directory is not None and path.is_dir() and directory(path):
        return path
    return None


def file_model_name(path: Path, name: str | None = None) -> str:
    """``name`` (``--name`` or ``name=``) if given, else the file's stem or the directory's name.

    A plugin needs the name before the spec when its model embeds it (an output record).
    """
    if name:
        return name
    return path.resolve().name if path.is_dir() else path.stem


def file_model_spec(
    model: Callable[..., Any],
    path: Path | None,
    name: str | None = None,
    *,
    version: str | int = DEFAULT_VERSION,
    batching: BatchSettings | None = None,
) -> ModelSpec:
    """The spec serving ``model``, loaded from ``path``: named ``name``, else after the file.

    ``path`` is None for a model built from something already open (an ONNX session); it
    then needs ``name``. ``model``'s own ``warmup()`` and ``close()`` are called by the server.
    """
    if not name:
        if path is None:
            raise RegistrationError("a model not loaded from a file needs a name (name=)")
        name = file_model_name(path)
    try:
        return make_spec(model, name, version=version, batching=batching)
    except RegistrationError as exc:
        raise RegistrationError(f"{exc} (choose another name with name= or --name)") from None
