"""How a torch model is called: on the configured device, under ``torch.inference_mode()``.

Grad mode is thread-local in torch and sync models run in the server's worker threads,
so neither a middleware (on the event loop) nor a type converter (run while decoding)
can switch it for the model's code. The plugin wraps whatever batching policy was chosen
for a model that uses torch types, and hands that policy's runner an invoker

1. whose function moves tensor arguments (also inside lists, tuples, dict values, and
   the items of a client stream) to the device, once per call, so a batch joined on the
   CPU crosses to the GPU in one transfer, and
2. whose ``enter`` hook runs every entry into the model's code under
   ``torch.inference_mode()``: a unary or batched call, and each burst of a sync
   generator, whose body runs later, in whichever pool thread steps it.

Results come back to the CPU while they are encoded. Async models run on the event loop
and are called as written: use ``torch.inference_mode()`` inside them.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Callable, Iterator
from typing import Any

from blazerpc_core import RegistrationError
from blazerpc_core.plugin import (
    BatchEvents,
    BatchingPolicy,
    CompiledModel,
    Enter,
    ModelInvoker,
    ModelSpec,
    Runner,
    is_record,
)
from blazerpc_torch.tensors import TorchTensorSpec


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
    if is_record(annotation):
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
    """``value`` with every tensor in it (top level, lists, tuples, dict values) on ``device``.

    A sync iterator (a client stream's requests) is moved item by item as the model reads it.
    """
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, Iterator):
        return (to_device(item, device) for item in value)
    return value


def on_device(func: Callable[..., Any], device: Any) -> Callable[..., Any]:
    """``func`` with its tensor arguments moved to ``device`` first (``func`` itself on the CPU)."""
    if device.type == "cpu":
        return func

    def call(*args: Any) -> Any:
        return func(*(to_device(a, device) for a in args))

    call.__wrapped__ = func  # type: ignore[attr-defined]
    return call


def inference_mode(outer: Enter | None) -> Enter:
    """An ``enter`` hook running model code under ``torch.inference_mode()`` (inside ``outer``, if any)."""

    def enter(call: Callable[[], Any]) -> Any:
        import torch

        with torch.inference_mode():
            return call()

    if outer is None:
        return enter
    return lambda call: outer(lambda: enter(call))


class TorchPolicy:
    """Any batching policy, with sync models' invokers on the device and under inference mode."""

    def __init__(self, inner: BatchingPolicy, device: Any) -> None:
        self.inner = inner
        self.device = device
        self.name = inner.name

    def create_runner(self, model: CompiledModel, invoker: ModelInvoker, events: BatchEvents) -> Runner:
        if not invoker.is_async:
            invoker = invoker.wrapped(func=on_device(invoker.func, self.device), enter=inference_mode(invoker.enter))
        return self.inner.create_runner(model, invoker, events)
