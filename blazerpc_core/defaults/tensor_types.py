"""Default plugin ``tensors``: numpy tensors (``TensorInput``, ``TensorOutput``, ``ndarray``) as ``TensorProto``."""

from __future__ import annotations

from typing import Any

import numpy as np

from blazerpc_core.markers import hookimpl
from blazerpc_core.schema.fields import FieldMapping, TypeContext
from blazerpc_core.schema.tensors import TensorSpec, numpy_mapping


@hookimpl(trylast=True)
def blazerpc_map_type(annotation: Any, context: TypeContext) -> FieldMapping | None:
    if isinstance(annotation, TensorSpec):
        return numpy_mapping(annotation, context)
    if annotation is np.ndarray or getattr(annotation, "__origin__", None) is np.ndarray:
        return numpy_mapping(TensorSpec(None, None), context)
    return None
