"""How a torch model is called: on the configured device, under ``torch.inference_mode()``.

Grad mode is thread-local in torch and sync models run in the server's worker threads,
so neither a middleware (on the event loop) nor a type converter (run while decoding)
can switch it for the model call. The call itself has to be wrapped. The plugin does
that when the server is built: it wraps whatever batching policy was chosen for a model
that uses torch types, and hands that policy an invoker whose function

1. moves tensor arguments (and tensors in list/tuple/dict arguments) to the device, once
   per call, so a batch joined on the CPU crosses to the GPU in one transfer, and
2. runs the model under ``torch.inference_mode()``.

Results come back to the CPU while they are encoded. Async and streaming models are
called as written (their code may span threads or interleave on the loop): use
``torch.inference_mode()`` inside them.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from blazerpc_core import RegistrationError
from blazerpc_torch.tensors import TorchTensorSpec

if TYPE_CHECKING:
    from blazerpc_core.runtime.events import BatchEvents
    from blazerpc_core.runtime.executor import Invoker
    from blazerpc_core.runtime.policy import BatchingPolicy, Runner
    from blazerpc_core.schema.builder import MethodSchema
    from blazerpc_core.spec import ModelSpec


def uses_torch(spec: ModelSpec) -> bool:
    """True when a parameter or the result is (or contains) a torch tensor type."""
    torch = sys.modules.get("torch")
    annotations = [annotation for _, annotation, _ in spec.inputs] + [spec.output]
    return any(_mentions(a, torch, depth=0) for a in annotations)


def _mentions(annotation: Any, torch: Any, *, depth: int) -> bool:
    if isinstance(annotation, TorchTensorSpec):
        return True
    if torch is not None and isinstance(annotation, type) and issubclass(annotation, torch.Tensor):
        return True
    if depth > 4:
        return False
    inner = list(typing.get_args(annotation))
    record = isinstance(annotation, type) and (
        dataclasses.is_dataclass(annotation) or (issubclass(annotation, tuple) and hasattr(annotation, "_fields"))
    )
    if record:
        try:
            inner += list(typing.get_type_hints(annotation).values())
        except Exception:  # the schema builder reports records it cannot resolve
            return False
    return any(_mentions(a, torch, depth=depth + 1) for a in inner)


def resolve_device(name: str | None) -> Any:
    """A usable ``torch.device`` for ``--torch-device`` (default cpu); refuses unknown or absent devices."""
    import torch

    try:
        device = torch.device(name or "cpu")
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as exc:
        raise RegistrationError(f"torch device {name!r} cannot be used here: {exc}") from exc
    return device


def to_device(value: Any, device: Any) -> Any:
    """``value`` with every tensor in it (top level, lists, tuples, dict values) on ``device``."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def inference_call(func: Callable[..., Any], device: Any) -> Callable[..., Any]:
    """``func`` called on ``device`` under ``torch.inference_mode()``."""
    import torch

    move = device.type != "cpu"

    def call(*args: Any) -> Any:
        if move:
            args = tuple(to_device(a, device) for a in args)
        with torch.inference_mode():
            return func(*args)

    call.__wrapped__ = func  # type: ignore[attr-defined]
    return call


class TorchPolicy:
    """Any batching policy, with the model's invoker wrapped by :func:`inference_call`."""

    def __init__(self, inner: BatchingPolicy, device: Any) -> None:
        self.inner = inner
        self.device = device
        self.name = inner.name

    def create_runner(self, method: MethodSchema, invoker: Invoker, events: BatchEvents) -> Runner:
        if not invoker.is_async:
            invoker = invoker.wrapped(func=inference_call(invoker.func, self.device))
        return self.inner.create_runner(method, invoker, events)
