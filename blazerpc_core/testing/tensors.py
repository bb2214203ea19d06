"""``TensorProto`` messages built and read with numpy alone, independently of the server's codec."""

from __future__ import annotations

from typing import Any

import numpy as np


def tensor_proto(pb2: Any, array: Any) -> Any:
    """A ``pb2.TensorProto`` holding ``array`` (anything ``numpy.asarray`` takes).

    ``pb2`` is a compiled stubs module (``Stubs.pb2``). The encoding uses numpy alone, not
    the server's codec, so a test checks the codec against an independent implementation.
    """
    array = np.ascontiguousarray(array)
    return pb2.TensorProto(shape=list(array.shape), dtype=array.dtype.name, data=array.tobytes())


def array_from_proto(message: Any) -> np.ndarray[Any, Any]:
    """The read-only numpy array a ``TensorProto`` holds (it shares the message's bytes).

    ``bfloat16`` has no numpy dtype; it decodes with ``ml_dtypes``, which must be installed
    (TensorFlow and JAX depend on it).
    """
    if message.dtype == "bfloat16":
        import ml_dtypes

        dtype = np.dtype(ml_dtypes.bfloat16)
    else:
        dtype = np.dtype(message.dtype)
    return np.frombuffer(message.data, dtype=dtype).reshape(list(message.shape))
