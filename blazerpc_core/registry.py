"""Model specs and the registry every registration path ends in.

A :class:`ModelSpec` is what a decorated function becomes. The :class:`ModelRegistry`
refuses invalid names, duplicate (name, version) pairs and rpc names that would collide,
at the line that registered them.
"""

from __future__ import annotations

import collections.abc as cabc
import enum
import inspect
import re
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from blazerpc_core.errors import RegistrationError
from blazerpc_core.settings import BatchSettings

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*([._-][A-Za-z0-9]+)*$")
_VERSION = re.compile(r"^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$")
DEFAULT_VERSION = "1"
#: Attribute under which the ``model`` decorator attaches a spec to its function.
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


def pascal_case(name: str) -> str:
    """``text-sentiment`` → ``TextSentiment``: split on non-alphanumerics, capitalise parts."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)


@dataclass
class ModelSpec:
    """One served function: name, version, signature, streaming shape, batching settings."""

    name: str
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

    @property
    def pascal(self) -> str:
        return pascal_case(self.name)

    @property
    def version_suffix(self) -> str:
        return "V" + re.sub(r"[^A-Za-z0-9]+", "_", self.version)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


def make_spec(
    func: Callable[..., Any],
    name: str | None = None,
    *,
    version: str | int = DEFAULT_VERSION,
    streaming: bool | None = None,
    batching: BatchSettings | None = None,
) -> ModelSpec:
    """Inspect ``func`` and build its spec, refusing what cannot be served."""
    name = func.__name__.replace("_", "-") if name is None else name
    version = str(version)
    check_name(name, version)
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:
        raise RegistrationError(f"model {name!r}: cannot resolve annotations: {exc}") from exc
    signature = inspect.signature(func)
    inputs: list[tuple[str, Any, Any]] = []
    stream_params = []
    for param in signature.parameters.values():
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
        description=inspect.getdoc(func) or "",
        inputs=inputs,
        output=output,
        is_async=is_async,
        is_generator=is_generator,
    )


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


def check_name(name: str, version: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise RegistrationError(
            f"invalid model name {name!r}: use letters, digits and '-', '_' or '.' "
            "between them, starting with a letter"
        )
    if not _VERSION.match(version):
        raise RegistrationError(
            f"invalid version {version!r} for model {name!r}: use letters, digits, '.', '-' or '_'"
        )


def version_key(version: str) -> tuple[Any, ...]:
    """Order versions so that "10" > "9" > "1.2" > "1.10"-style ties resolve numerically."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[._-]", version))


def as_spec(obj: Any) -> ModelSpec:
    """The spec behind a decorated function (or a spec itself)."""
    if isinstance(obj, ModelSpec):
        return obj
    spec = getattr(obj, SPEC_ATTR, None)
    if isinstance(spec, ModelSpec):
        return spec
    raise RegistrationError(f"{obj!r} is not a model: decorate it with blazerpc_core.model(...)")


class ModelRegistry:
    """All models to serve; knows which version is the default and every rpc name."""

    def __init__(self) -> None:
        self._specs: dict[tuple[str, str], ModelSpec] = {}
        self._pascal_owner: dict[str, str] = {}

    def register(self, model: Any) -> None:
        """Add a model (a spec or a decorated function); refuses duplicates and collisions."""
        spec = as_spec(model)
        key = (spec.name, spec.version)
        if key in self._specs:
            raise RegistrationError(f"model {spec.name!r} version {spec.version!r} is already registered")
        owner = self._pascal_owner.get(spec.pascal)
        if owner is not None and owner != spec.name:
            raise RegistrationError(
                f"model names {owner!r} and {spec.name!r} both map to rpc Predict{spec.pascal}; rename one"
            )
        self._specs[key] = spec
        self._pascal_owner[spec.pascal] = spec.name
        rpcs = [rpc for rpc, _, _ in self.rpcs()]
        duplicates = {rpc for rpc in rpcs if rpcs.count(rpc) > 1}
        if duplicates:
            del self._specs[key]
            if not any(s.name == spec.name for s in self._specs.values()):
                del self._pascal_owner[spec.pascal]
            raise RegistrationError(
                f"model {spec.name!r} version {spec.version!r} would serve rpc "
                f"{sorted(duplicates)[0]}, which another model already serves; rename one"
            )

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: (s.name, version_key(s.version))))

    def __len__(self) -> int:
        return len(self._specs)

    def versions(self, name: str) -> list[ModelSpec]:
        return sorted((s for s in self._specs.values() if s.name == name), key=lambda s: version_key(s.version))

    def default(self, name: str) -> ModelSpec:
        """The highest version of ``name``: what ``Predict<Pascal>`` serves."""
        return self.versions(name)[-1]

    def rpcs(self) -> list[tuple[str, str, ModelSpec]]:
        """(rpc name, message prefix, spec) for every rpc: the default, then each version."""
        out = []
        for name in sorted({s.name for s in self._specs.values()}):
            versions = self.versions(name)
            default = versions[-1]
            out.append((f"Predict{default.pascal}", default.pascal, default))
            if len(versions) > 1:
                for spec in versions:
                    prefix = spec.pascal + spec.version_suffix
                    out.append((f"Predict{prefix}", prefix, spec))
        return out
