"""An ONNX graph as a blazerpc model: its inputs, outputs, dtypes and shapes come from the graph.

Each graph input becomes a request field (in graph order) and each output a response
field (``result`` when there is only one). Tensors use the core's ``TensorProto``
mapping, so requests are validated (dtype, rank, fixed dimensions, byte count) before
onnxruntime sees them, and arrays reach the session without a copy.

A graph whose every input and output has a dynamic first dimension is batched by
default: that dimension is named ``batch`` and concurrent requests are joined along it.
The server calls :meth:`OnnxModel.warmup` before the model is ready, so no client pays
for the session's first run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from blazerpc_core import InvalidArgument, ModelSpec, RegistrationError
from blazerpc_core.plugin import (
    BatchSettings,
    TensorSpec,
    attach_signature,
    field_names,
    file_model_name,
    file_model_spec,
    output_record,
    pascal_case,
)
from blazerpc_onnx.session import open_session

log = logging.getLogger("blazerpc.onnx")

#: onnxruntime's type strings for the tensor element types that have a numpy dtype.
ONNX_DTYPES: dict[str, np.dtype[Any]] = {
    f"tensor({onnx})": np.dtype(numpy)
    for onnx, numpy in [
        ("float", "float32"), ("double", "float64"), ("float16", "float16"),
        ("int8", "int8"), ("int16", "int16"), ("int32", "int32"), ("int64", "int64"),
        ("uint8", "uint8"), ("uint16", "uint16"), ("uint32", "uint32"), ("uint64", "uint64"),
        ("bool", "bool"),
    ]
}


def _shape(raw: Any) -> tuple[int | None, ...] | None:
    """A graph shape with symbolic or unknown dimensions as None (None: rank unknown)."""
    if raw is None:
        return None
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in raw)


def _shared_symbols(inputs: Sequence[Any]) -> dict[str, list[tuple[int, int]]]:
    """Symbolic dimensions (``"N"``) that appear in more than one place among the inputs.

    onnxruntime does not check these before running, and a mismatch then fails deep inside
    an operator; checking first turns the caller's mistake into INVALID_ARGUMENT.
    """
    places: dict[str, list[tuple[int, int]]] = {}
    for index, node in enumerate(inputs):
        for axis, dim in enumerate(node.shape or ()):
            if isinstance(dim, str) and dim:
                places.setdefault(dim, []).append((index, axis))
    return {symbol: where for symbol, where in places.items() if len(where) > 1}


def _tensor_spec(node: Any, *, where: str, output: bool) -> TensorSpec:
    dtype = ONNX_DTYPES.get(node.type)
    if dtype is None:
        raise RegistrationError(
            f"{where} {node.name!r} has type {node.type}, which blazerpc cannot carry as a tensor "
            f"(supported: {', '.join(d.name for d in ONNX_DTYPES.values())})"
        )
    return TensorSpec(dtype, _shape(node.shape), output=output)


class OnnxModel:
    """Calls an ``InferenceSession`` with one array per graph input, in graph order.

    Instances carry a signature built from the graph (see :func:`load_model`), so they
    can be registered like any typed function.
    """

    def __init__(self, session: Any, *, name: str, batch: bool | None = None) -> None:
        self.session = session
        self.name = name
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if not outputs:
            raise RegistrationError(f"ONNX model {name!r} has no outputs")
        in_specs = [_tensor_spec(n, where="input", output=False) for n in inputs]
        out_specs = [_tensor_spec(n, where="output", output=True) for n in outputs]
        self.batchable = all(s.batchable for s in in_specs + out_specs)
        if batch and not self.batchable:
            fixed = [n.name for n, s in zip([*inputs, *outputs], in_specs + out_specs, strict=True)
                     if not s.batchable]
            raise RegistrationError(
                f"ONNX model {name!r} cannot be batched: {', '.join(fixed)} "
                "has no dynamic first dimension"
            )
        named = self.batchable and batch is not False
        in_specs = [TensorSpec(s.dtype, s.shape, named, s.output) for s in in_specs]
        out_specs = [TensorSpec(s.dtype, s.shape, named, s.output) for s in out_specs]
        self.input_names = [n.name for n in inputs]
        self.output_names = [n.name for n in outputs]
        self.input_specs = in_specs
        self._shared_dims = _shared_symbols(inputs)
        params = list(zip(field_names(self.input_names, fallback="input"), in_specs, strict=True))
        self._record: type | None = None
        if len(outputs) == 1:
            result: Any = out_specs[0]
        else:
            members = zip(field_names(self.output_names, fallback="output"), out_specs, strict=True)
            result = self._record = output_record(f"{_pascal(name)}Outputs", list(members))
        attach_signature(self, params, result)
        self.__doc__ = _describe(self.input_names, in_specs, self.output_names, out_specs)

    def __call__(self, *arrays: Any) -> Any:
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument as OrtInvalidArgument

        for symbol, places in self._shared_dims.items():
            sizes = {arrays[i].shape[axis] for i, axis in places}
            if len(sizes) > 1:
                got = ", ".join(f"{self.input_names[i]}[{axis}]={arrays[i].shape[axis]}" for i, axis in places)
                raise InvalidArgument(f"inputs must agree on dimension {symbol!r}; got {got}")
        feeds = dict(zip(self.input_names, arrays, strict=True))
        try:
            results = self.session.run(self.output_names, feeds)
        except OrtInvalidArgument as exc:
            # Shapes the graph constrains beyond what its metadata says (e.g. two inputs
            # that must agree) are the caller's mistake, not a server failure.
            raise InvalidArgument(f"onnxruntime rejected the input: {exc}") from exc
        if self._record is None:
            return results[0]
        return self._record(*results)

    def warmup(self) -> None:
        """Run the graph once on zeros (dynamic dimensions of size 1) to pay first-call costs.

        Called by the server before the model is ready. A graph may reject zeros (a shape
        constraint its metadata does not tell); it serves all the same, so that is logged.
        """
        arrays = []
        for spec in self.input_specs:
            assert spec.dtype is not None
            shape = () if spec.shape is None else tuple(1 if d is None else d for d in spec.shape)
            arrays.append(np.zeros(shape, dtype=spec.dtype))
        try:
            self.session.run(self.output_names, dict(zip(self.input_names, arrays, strict=True)))
        except Exception as exc:
            log.warning("warm-up of ONNX model %s skipped: %s", self.name, exc)


def load_model(
    source: str | Path | Any,
    name: str | None = None,
    *,
    version: str | int = "1",
    batch: bool | None = None,
    max_batch_size: int | None = None,
    batch_timeout_ms: float | None = None,
    providers: Sequence[str] | None = None,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
) -> ModelSpec:
    """A model spec serving an ``.onnx`` file (or an open ``InferenceSession``).

    ``name`` defaults to the file stem. ``providers`` lists execution providers in order
    of preference (``"cuda"``, ``"CPUExecutionProvider"``, ...); the default is every
    local provider this onnxruntime build has. ``batch=False`` turns batching off for a
    graph that would be batched by default; ``batch=True`` fails unless it can be.
    Register the result with ``app.add(...)``::

        app = BlazeApp()
        app.add(blazerpc_onnx.load_model("mlp.onnx", name="classify"))
    """
    path: Path | None = None
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = file_model_name(path, name)
        session = open_session(
            path, providers=providers, intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads
        )
    else:
        if name is None:
            raise RegistrationError("load_model(session) needs a name= for the model")
        session = source
    model = OnnxModel(session, name=name, batch=batch)
    batching = BatchSettings(batch=batch, max_batch_size=max_batch_size, batch_timeout_ms=batch_timeout_ms)
    return file_model_spec(model, path, name, version=version, batching=batching)


def _pascal(name: str) -> str:
    return pascal_case(name) or "Model"


def _describe(
    in_names: Sequence[str], in_specs: Sequence[TensorSpec], out_names: Sequence[str], out_specs: Sequence[TensorSpec]
) -> str:
    ins = ", ".join(f"{n}: {s.describe()}" for n, s in zip(in_names, in_specs, strict=True))
    outs = ", ".join(f"{n}: {s.describe()}" for n, s in zip(out_names, out_specs, strict=True))
    return f"ONNX graph ({ins}) -> ({outs})"
