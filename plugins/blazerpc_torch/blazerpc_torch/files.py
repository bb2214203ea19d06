"""Serving saved torch models: TorchScript archives (``.pt``) and torch.export programs (``.pt2``).

* **torch.export** (``torch.export.save``, ``.pt2``): the program records each input's
  dtype and shape, so requests are checked exactly; a dimension exported as dynamic
  accepts any size. When every input and output has a dynamic first dimension the model
  is batched by default, that dimension being named ``batch``.
* **TorchScript** (``torch.jit.save``, ``.pt``/``.pth``/``.ts``): the archive names the
  inputs but records no dtype or shape. Each input accepts any floating-point tensor of
  any shape (float32, float64, float16, bfloat16), converted to the dtype of the module's
  floating-point parameters (float32 when it has none); other dtypes are
  INVALID_ARGUMENT. Not batched unless asked (``batch=True``), because nothing says the
  first dimension is a batch.

Inputs become request fields in the forward signature's order; one output is ``result``,
several (a tuple, or any nested structure of tensors) are ``output_0``, ``output_1``, ...
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from blazerpc_core import ModelSpec, RegistrationError
from blazerpc_core.plugin import (
    BatchSettings,
    attach_signature,
    field_names,
    file_model_name,
    file_model_spec,
    model_file,
    output_record,
    pascal_case,
)
from blazerpc_torch.tensors import FLOATS, TORCH, TorchTensorSpec, torch_dtypes

SCRIPT_SUFFIXES = (".pt", ".pth", ".ts")
EXPORT_SUFFIXES = (".pt2",)


def torch_file(target: str) -> Path | None:
    """The path ``target`` names when it is a TorchScript archive or a torch.export program, else None."""
    return model_file(target, SCRIPT_SUFFIXES + EXPORT_SUFFIXES)


class TorchFileModel:
    """Calls a loaded module with one tensor per input and flattens its outputs."""

    def __init__(
        self,
        module: Any,
        *,
        name: str,
        device: Any,
        inputs: list[tuple[str, TorchTensorSpec]],
        outputs: list[TorchTensorSpec],
        cast_to: Any = None,
        kind: str,
    ) -> None:
        self.module = module
        self.device = device
        self._cast_to = cast_to
        self._record: type | None = None
        names = field_names([n for n, _ in inputs], fallback="input")
        params = list(zip(names, [s for _, s in inputs], strict=True))
        if len(outputs) == 1:
            result: Any = outputs[0]
        else:
            fields = [(f"output_{i}", s) for i, s in enumerate(outputs)]
            result = self._record = output_record(f"{pascal_case(name) or 'Model'}Outputs", fields)
        attach_signature(self, params, result)
        ins = ", ".join(f"{n}: {s.describe()}" for n, s in params)
        outs = ", ".join(s.describe() for s in outputs)
        self.__doc__ = f"{kind} ({ins}) -> ({outs})"

    def __call__(self, *tensors: Any) -> Any:
        from torch.utils._pytree import tree_leaves

        args = [t.to(self.device, self._cast_to) if self._cast_to is not None else t.to(self.device)
                for t in tensors]
        result = self.module(*args)
        if self._record is None:
            return result
        return self._record(*tree_leaves(result))


def load_model(
    path: str | Path,
    name: str | None = None,
    *,
    version: str | int = "1",
    device: str | None = None,
    batch: bool | None = None,
    max_batch_size: int | None = None,
    batch_timeout_ms: float | None = None,
) -> ModelSpec:
    """A model spec serving a TorchScript (``.pt``) or torch.export (``.pt2``) file.

    ``name`` defaults to the file stem; ``device`` (``"cpu"``, ``"cuda:0"``, ...) is where
    the module's weights are loaded and inputs are sent. Register it with ``app.add(...)``.
    """
    from blazerpc_torch.calls import resolve_device

    path = Path(path)
    name = file_model_name(path, name)
    if not path.is_file():
        raise RegistrationError(f"torch model {str(path)!r}: no such file")
    where = resolve_device(device)
    if path.suffix.lower() in EXPORT_SUFFIXES:
        model = _load_export(path, name, where, batch)
    else:
        model = _load_script(path, name, where, batch)
    batching = BatchSettings(batch=batch, max_batch_size=max_batch_size, batch_timeout_ms=batch_timeout_ms)
    return file_model_spec(model, path, name, version=version, batching=batching)


def _load_script(path: Path, name: str, device: Any, batch: bool | None) -> TorchFileModel:
    import torch

    jit: Any = torch.jit  # untyped in torch; typed the same whether or not torch is installed
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = jit.load(str(path), map_location=device)
    except Exception as exc:
        raise RegistrationError(
            f"{str(path)!r} is not a TorchScript archive (torch.jit.save) or torch.export program (.pt2): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. A module saved with "
            "torch.save needs its Python class: serve an app that builds it and takes torch.Tensor inputs"
        ) from exc
    module.eval()
    schema = module.forward.schema
    inputs = []
    for arg in schema.arguments[1:]:
        if str(arg.type) != "Tensor":
            if arg.default_value is not None:
                continue
            raise RegistrationError(
                f"TorchScript model {str(path)!r}: input {arg.name!r} is {arg.type}; only Tensor inputs can be served"
            )
        inputs.append((arg.name, TorchTensorSpec(FLOATS, None)))
    outputs = [TorchTensorSpec(None, None)] * _script_output_count(str(schema.returns[0].type), path)
    floating = [p.dtype for p in [*module.parameters(), *module.buffers()] if p.is_floating_point()]
    return TorchFileModel(
        module, name=name, device=device, inputs=inputs, outputs=outputs,
        cast_to=floating[0] if floating else torch.float32, kind="TorchScript module",
    )


def _script_output_count(type_text: str, path: Path) -> int:
    if type_text == "Tensor":
        return 1
    match = re.fullmatch(r"Tuple\[(Tensor(?:, Tensor)*)\]", type_text)
    if match is None:
        raise RegistrationError(
            f"TorchScript model {str(path)!r} returns {type_text}; only a Tensor or a tuple of Tensors can be served"
        )
    return match.group(1).count("Tensor")


def _load_export(path: Path, name: str, device: Any, batch: bool | None) -> TorchFileModel:
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise RegistrationError(f"{str(path)!r} is not a torch.export program (torch.export.save): {exc}") from exc
    nodes = {node.name: node for node in program.graph.nodes}
    signature = program.graph_signature
    in_specs = [_exported_spec(nodes[n], path, "input") for n in signature.user_inputs]
    out_specs = [_exported_spec(nodes.get(n), path, "output") for n in signature.user_outputs]
    batchable = all(s.shape and s.shape[0] is None for s in in_specs + out_specs)
    if batch and not batchable:
        raise RegistrationError(
            f"torch.export model {str(path)!r} cannot be batched: export it with a dynamic first "
            "dimension on every input (dynamic_shapes={0: torch.export.Dim('batch')})"
        )
    named = batchable and batch is not False
    in_specs = [TorchTensorSpec(s.dtypes, s.shape, named) for s in in_specs]
    out_specs = [TorchTensorSpec(s.dtypes, s.shape, named) for s in out_specs]
    module = program.module().to(device)
    return TorchFileModel(
        module, name=name, device=device, inputs=list(zip(signature.user_inputs, in_specs, strict=True)),
        outputs=out_specs, kind="torch.export program",
    )


def _exported_spec(node: Any, path: Path, what: str) -> TorchTensorSpec:
    import torch

    value = None if node is None else node.meta.get("val")
    if not isinstance(value, torch.Tensor):
        raise RegistrationError(
            f"torch.export model {str(path)!r}: {what} {getattr(node, 'name', '?')!r} is not a tensor"
        )
    try:
        dtype = TORCH.dtype_name(value.dtype)
    except RegistrationError as exc:
        raise RegistrationError(f"torch.export model {str(path)!r}: {what}: {exc}") from None
    if dtype not in torch_dtypes():
        raise RegistrationError(f"torch.export model {str(path)!r}: {what} dtype {dtype} is not supported")
    shape = tuple(d if isinstance(d, int) else None for d in value.shape)
    return TorchTensorSpec((dtype,), shape)
