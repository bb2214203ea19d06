"""``torch.Tensor`` on the wire: torch's primitives under the core's framework tensors.

The annotation, the request checks, casting, batching and the field mapping are the core's
(:class:`~blazerpc_core.plugin.FrameworkTensors`); this module only says how torch does
each step. Decoding wraps the request's bytes with ``torch.frombuffer``: no copy. Those
bytes belong to an immutable ``bytes`` object, and torch has no read-only tensors, so an
input tensor must be treated as read-only: an in-place operation on it (``x.add_(1)``) is
not allowed; ``x.clone()`` first. torch warns about this once per process; the plugin
takes that warning at build time instead of on a client's first request.

bfloat16 (no numpy dtype) travels as raw 2-byte values with dtype ``"bfloat16"``.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from blazerpc_core.plugin import FRAMEWORK_DTYPES, FrameworkTensors, FrameworkTensorSpec

FLOATS = ("float32", "float64", "float16", "bfloat16")


@functools.cache
def torch_dtypes() -> dict[str, Any]:
    """Wire dtype name → ``torch.dtype`` for every dtype this torch build has."""
    import torch

    found = {name: getattr(torch, name, None) for name in FRAMEWORK_DTYPES}
    return {name: dtype for name, dtype in found.items() if isinstance(dtype, torch.dtype)}


@dataclass(frozen=True)
class TorchTensorSpec(FrameworkTensorSpec):
    """A declared torch tensor: accepted dtypes (None: any), shape (None: any rank).

    A single dtype is also what a returned tensor is cast to. ``batch_named`` marks a first
    dimension called ``"batch"``, which turns batching on; a bare ``torch.Tensor`` (any
    rank) may be batched when the model opts in.
    """

    kind: ClassVar[str] = "torch tensor"


class TorchTensors(FrameworkTensors):
    """torch's tensor primitives."""

    framework = "torch"
    spec_type = TorchTensorSpec

    def tensor_type(self) -> Any | None:
        torch = sys.modules.get("torch")
        return None if torch is None else torch.Tensor

    def native_name(self, dtype: Any) -> str | None:
        if type(dtype).__name__ == "dtype" and type(dtype).__module__ == "torch":
            return str(dtype).removeprefix("torch.")
        return None

    def available(self) -> dict[str, Any]:
        return torch_dtypes()

    def from_bytes(self, data: bytes, dtype: str, shape: list[int]) -> Any:
        import torch

        kind = torch_dtypes()[dtype]
        if not data:
            return torch.empty(shape, dtype=kind)
        if len(data) == 1:
            # CPython shares one-byte bytes objects process-wide; never alias those.
            return torch.frombuffer(bytearray(data), dtype=kind).reshape(shape)
        return torch.frombuffer(data, dtype=kind).reshape(shape)

    def to_tensor(self, value: Any) -> Any:
        import torch

        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        return tensor.detach()

    def dtype_of(self, tensor: Any) -> str:
        return str(tensor.dtype).removeprefix("torch.")

    def cast(self, tensor: Any, dtype: str) -> Any:
        return tensor.to(torch_dtypes()[dtype])

    def shape_of(self, tensor: Any) -> tuple[int, ...]:
        return tuple(tensor.shape)

    def to_bytes(self, tensor: Any) -> bytes:
        import torch

        tensor = tensor.cpu().resolve_conj().resolve_neg().contiguous()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.view(torch.int16)
        data: bytes = tensor.numpy().tobytes()
        return data

    def concat(self, parts: Sequence[Any]) -> Any:
        import torch

        return torch.cat(list(parts), dim=0)

    def split(self, tensor: Any, sizes: Sequence[int]) -> list[Any]:
        import torch

        return list(torch.split(tensor, list(sizes), dim=0))

    def prepare(self) -> None:
        _take_readonly_warning()


#: The torch plugin's one set of tensor primitives.
TORCH = TorchTensors()


class TorchTensor:
    """Annotation for a torch tensor with a declared dtype and shape.

    ``TorchTensor[torch.float32, "batch", 512]``: the dtype (a ``torch.dtype``, a numpy
    dtype or a name such as ``"bfloat16"``), then the dimensions as for ``TensorInput``.
    A bare ``torch.Tensor`` annotation takes any dtype and shape.
    """

    def __class_getitem__(cls, args: Any) -> FrameworkTensorSpec:
        return TORCH.annotation(args, what="TorchTensor", example="TorchTensor[torch.float32, 'batch', 512]")


@functools.cache
def _take_readonly_warning() -> None:
    """torch warns once per process that a tensor over read-only memory is writable; see the module doc."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.frombuffer(b"\0\0", dtype=torch.uint8)
