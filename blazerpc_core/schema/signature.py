"""Give a model artifact's named inputs and outputs the shape of a typed Python function.

The core builds an rpc from a function's signature (:func:`blazerpc_core.registry.make_spec`):
one request field per parameter and one response field per member of a dataclass return
type. A plugin that serves model files (an ONNX graph, a TorchScript archive, a
SavedModel) finds that information in the artifact instead. These helpers turn the
artifact's names into field names and attach a matching ``__signature__`` and
``__annotations__`` to the callable that runs it, so the core maps, validates and
batches it like any annotated function::

    inputs = list(zip(field_names(["input:0"], fallback="input"), [TensorInput[np.float32, "batch", 4]]))
    outputs = output_record("NetOutputs", [("scores", TensorOutput[np.float32, "batch", 2]),
                                           ("label", TensorOutput[np.int64, "batch"])])
    attach_signature(runner, inputs, outputs)   # runner(input_0) -> NetOutputs
    spec = make_spec(runner, name="net")

They live in the core so that every framework plugin derives field names the same way.
"""

from __future__ import annotations

import dataclasses
import inspect
import keyword
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["attach_signature", "field_names", "output_record"]

_NOT_IDENT = re.compile(r"[^A-Za-z0-9_]+")


def field_names(raw: Sequence[str], *, fallback: str) -> list[str]:
    """Artifact names as unique identifiers that are valid in Python and protobuf.

    ``input:0`` becomes ``input_0``; an empty or digit-led name gets ``fallback`` in
    front; a Python keyword gets a trailing ``_``; clashes get a numeric suffix. The order
    of ``raw`` is kept.
    """
    out: list[str] = []
    for index, name in enumerate(raw):
        ident = _NOT_IDENT.sub("_", name).strip("_") or f"{fallback}_{index}"
        if ident[0].isdigit():
            ident = f"{fallback}_{ident}"
        if keyword.iskeyword(ident):
            ident += "_"
        candidate, n = ident, 2
        while candidate in out:
            candidate, n = f"{ident}_{n}", n + 1
        out.append(candidate)
    return out


def output_record(name: str, fields: Sequence[tuple[str, Any]]) -> type:
    """A frozen dataclass with one member per output, so each becomes a response field.

    ``fields`` are ``(field name, annotation)`` pairs in response order; ``name`` is the
    class name (it does not appear in the schema, which names messages after the model).
    """
    return dataclasses.make_dataclass(name, list(fields), frozen=True)


def attach_signature(target: Any, inputs: Sequence[tuple[str, Any]], output: Any) -> None:
    """Make ``target`` look, to ``inspect`` and ``typing``, like ``def f(<inputs>) -> output``.

    ``inputs`` are ``(parameter name, annotation)`` pairs in request order; ``output`` is
    one annotation (a single ``result`` field) or a record from :func:`output_record`.
    ``target`` must accept attribute assignment (a function or an instance).
    """
    params = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation)
        for name, annotation in inputs
    ]
    target.__signature__ = inspect.Signature(params, return_annotation=output)
    target.__annotations__ = {**dict(inputs), "return": output}
