"""What a decorated function or class becomes: a :class:`ModelSpec`.

A spec is the static description of one model version: its name, version, inputs and
output (from the signature), streaming shape and batching settings. Function models
(and callable objects, such as a model a plugin loaded from a file) are called as they
are. A class model's ``__init__`` (no required arguments) loads it
and its ``__call__`` is the model; an optional ``warmup()`` runs before it serves and an
optional ``close()`` when the instance is retired (a callable object's own ``warmup()``
and ``close()`` are called the same way). The server creates instances while it
runs (:meth:`ModelSpec.instantiate`), never at import.
"""

from __future__ import annotations

import collections.abc as cabc
import enum
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from blazerpc_core.errors import RegistrationError
from blazerpc_core.naming import DEFAULT_VERSION, check_name, model_label, pascal_case, version_suffix
from blazerpc_core.settings import BatchSettings

#: Attribute under which the ``model`` decorator attaches a spec to its function or class.
SPEC_ATTR = "__blazerpc_model__"


class Streaming(enum.StrEnum):
    """The gRPC shape of a model's rpc."""

    UNARY = "unary"
    SERVER = "server-streaming"
    CLIENT = "client-streaming"
    BIDI = "bidi-streaming"

    @property
    def client_streams(self) -> bool:
        return self in (Streaming.CLIENT, Streaming.BIDI)

    @property
    def server_streams(self) -> bool:
        return self in (Streaming.SERVER, Streaming.BIDI)


@dataclass
class Loaded:
    """One live model instance: what the server calls, and its optional lifecycle methods."""

    func: Callable[..., Any]
    warmup: Callable[[], Any] | None = None
    close: Callable[[], Any] | None = None


@dataclass
class ModelSpec:
    """One served model version: name, version, signature, streaming shape, batching settings."""

    name: str
    #: The function; for a class model, its unbound ``__call__`` (for introspection only).
    func: Callable[..., Any]
    version: str = DEFAULT_VERSION
    batching: BatchSettings = field(default_factory=BatchSettings)
    streaming: Streaming = Streaming.UNARY
    description: str = ""
    #: Inputs in declaration order: (parameter name, annotation, default or inspect.Parameter.empty).
    inputs: list[tuple[str, Any, Any]] = field(default_factory=list)
    #: The annotation of one result (for streams: of one yielded item).
    output: Any = None
    is_async: bool = False
    is_generator: bool = False
    #: The class of a class model (instantiated by the server), None for a function model.
    factory: type | None = None
    #: Compiled forms of this spec, by the type-mapping plugins that compiled it (so it compiles once).
    compiled: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def pascal(self) -> str:
        return pascal_case(self.name)

    @property
    def version_suffix(self) -> str:
        return version_suffix(self.version)

    @property
    def label(self) -> str:
        """``'add' version '1'``: how messages and logs name this model version."""
        return model_label(self.name, self.version)

    def instantiate(self) -> Loaded:
        """A live instance: the function itself, or a new object of the class (runs ``__init__``).

        Blocking (a class loads its weights here): the server calls it in a pool thread.
        """
        if self.factory is None:
            # A callable object (a model a plugin loaded from a file) may have the lifecycle
            # methods too; it is one object, so it serves every instance of this spec.
            return Loaded(self.func, warmup=_method(self.func, "warmup"), close=_method(self.func, "close"))
        instance = self.factory()
        return Loaded(
            instance.__call__,
            warmup=_method(instance, "warmup"),
            close=_method(instance, "close"),
        )


def _method(instance: Any, name: str) -> Callable[[], Any] | None:
    method = getattr(instance, name, None)
    return method if callable(method) else None


def make_spec(
    obj: Callable[..., Any],
    name: str | None = None,
    *,
    version: str | int = DEFAULT_VERSION,
    streaming: bool | None = None,
    batching: BatchSettings | None = None,
) -> ModelSpec:
    """Inspect a function (or a class with ``__call__``) and build its spec, refusing what cannot be served."""
    factory = obj if inspect.isclass(obj) else None
    if name is None:
        name = _kebab(obj.__name__) if factory is not None else obj.__name__.replace("_", "-")
    version = str(version)
    check_name(name, version)
    func = _call_method(factory, name) if factory is not None else obj
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:
        raise RegistrationError(f"model {name!r}: cannot resolve annotations: {exc}") from exc
    parameters = list(inspect.signature(func).parameters.values())
    if factory is not None:
        parameters = parameters[1:]  # self
    inputs: list[tuple[str, Any, Any]] = []
    stream_params = []
    for param in parameters:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise RegistrationError(f"model {name!r}: *args/**kwargs parameter {param.name!r} cannot be served")
        if param.name not in hints:
            raise RegistrationError(f"model {name!r}: parameter {param.name!r} has no type annotation")
        annotation = hints[param.name]
        item = _stream_item(annotation)
        if item is not None:
            stream_params.append(param.name)
            annotation = item
        inputs.append((param.name, annotation, param.default))
    if "return" not in hints:
        raise RegistrationError(f"model {name!r}: the return type is not annotated")
    output = hints["return"]
    is_generator = inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)
    is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
    yielded = _stream_item(output)
    server_streams = is_generator or bool(streaming)
    if server_streams:
        if yielded is None:
            raise RegistrationError(
                f"model {name!r} streams its results, so its return type must be "
                f"Iterator[T] or AsyncIterator[T], not {output!r}"
            )
        output = yielded
    elif streaming is False and is_generator:
        raise RegistrationError(f"model {name!r} is a generator but streaming=False was given")
    if stream_params and len(inputs) != 1:
        raise RegistrationError(
            f"model {name!r}: a client-streaming model takes exactly one parameter, the "
            f"stream ({', '.join(stream_params)}), not {len(inputs)}"
        )
    if stream_params:
        shape = Streaming.BIDI if server_streams else Streaming.CLIENT
    else:
        shape = Streaming.SERVER if server_streams else Streaming.UNARY
    return ModelSpec(
        name=name,
        func=func,
        version=version,
        batching=batching or BatchSettings(),
        streaming=shape,
        description=inspect.getdoc(obj) or "",
        inputs=inputs,
        output=output,
        is_async=is_async,
        is_generator=is_generator,
        factory=factory,
    )


def _call_method(cls: type, name: str) -> Callable[..., Any]:
    """A class model's ``__call__``, after checking that ``cls()`` needs no arguments."""
    call = inspect.getattr_static(cls, "__call__", None)
    if not inspect.isfunction(call):
        raise RegistrationError(f"model {name!r}: class {cls.__name__} needs a __call__ method (the model)")
    try:
        init = inspect.signature(cls)
    except (TypeError, ValueError):
        return call  # a builtin __init__ takes nothing we could check
    required = [
        p.name for p in init.parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise RegistrationError(
            f"model {name!r}: the server creates {cls.__name__}() with no arguments, but __init__ "
            f"requires {', '.join(required)}; give them defaults (or read settings in __init__)"
        )
    return call


def _kebab(class_name: str) -> str:
    """``TextClassifier`` → ``text-classifier``: a class model's default name."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", class_name).lower()


_STREAM_ORIGINS = {
    cabc.Iterator, cabc.Iterable, cabc.Generator,
    cabc.AsyncIterator, cabc.AsyncIterable, cabc.AsyncGenerator,
}


def _stream_item(annotation: Any) -> Any | None:
    """The item type of an (async) iterator annotation, or None if it is not one."""
    if typing.get_origin(annotation) in _STREAM_ORIGINS:
        args = typing.get_args(annotation)
        return args[0] if args else Any
    return None


def as_spec(obj: Any) -> ModelSpec:
    """The spec behind a decorated function or class (or a spec itself)."""
    if isinstance(obj, ModelSpec):
        return obj
    spec = getattr(obj, SPEC_ATTR, None)
    if isinstance(spec, ModelSpec):
        return spec
    raise RegistrationError(f"{obj!r} is not a model: decorate it with blazerpc_core.model(...)")


#: Method of an object that holds several models (a ``BlazeApp``): returns (specs, plugins they need).
MODELS_ATTR = "__blazerpc_models__"


def specs_of(obj: Any) -> tuple[list[ModelSpec], list[Any]]:
    """Models (and plugins they need) behind an object: an app, a model, a spec, or a list of them."""
    if isinstance(obj, (list, tuple)):
        specs: list[ModelSpec] = []
        plugins: list[Any] = []
        for item in obj:
            s, p = specs_of(item)
            specs += s
            plugins += p
        return specs, plugins
    models = getattr(obj, MODELS_ATTR, None)
    if callable(models) and not isinstance(obj, type):
        found, needed = models()
        return list(found), list(needed)
    return [as_spec(obj)], []
