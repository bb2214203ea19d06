"""``TensorProto`` conversion for torch tensors, bfloat16 included (numpy has no bfloat16).

Everything else these tests need (``cli_stubs``, ``serve_cli``, ``BatchRecorder``, ...)
comes from ``blazerpc_core.testing``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from blazerpc_core.testing import array_from_proto, tensor_proto


def to_tensor(pb2: Any, value: Any) -> Any:
    """A TensorProto for a numpy array or a torch tensor (bfloat16 as raw 2-byte values)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().contiguous()
        if value.dtype == torch.bfloat16:
            raw = value.view(torch.int16).numpy().tobytes()
            return pb2.TensorProto(shape=value.shape, dtype="bfloat16", data=raw)
        value = value.numpy()
    return tensor_proto(pb2, value)


def from_tensor(message: Any) -> torch.Tensor:
    """The torch tensor a TensorProto holds (a writable copy)."""
    if message.dtype == "bfloat16":
        raw = np.frombuffer(message.data, dtype=np.int16).copy()
        return torch.from_numpy(raw).view(torch.bfloat16).reshape(tuple(message.shape))
    return torch.from_numpy(array_from_proto(message).copy())
