"""Serving a SavedModel directory through one of its signatures (``serving_default``).

The signature names every input and output with its dtype and shape, so requests are
checked exactly. Inputs become request fields in the signature's order; one output is
``result``, several are one field each, named after the signature's outputs. When every
input and output has a dynamic first dimension the model is batched by default, that
dimension being named ``batch``.
"""

from __future__ import annotations

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
from blazerpc_tf.tensors import TF, TFTensorSpec

DEFAULT_SIGNATURE = "serving_default"


def is_saved_model(path: Path) -> bool:
    """A SavedModel directory holds ``saved_model.pb`` (or its text form)."""
    return path.is_dir() and any((path / f).is_file() for f in ("saved_model.pb", "saved_model.pbtxt"))


def saved_model_dir(target: str) -> Path | None:
    """The path ``target`` names when it is a SavedModel directory, else None."""
    return model_file(target, directory=is_saved_model)


class SavedModelFunction:
    """Calls a SavedModel signature with one tensor per input, in the signature's order."""

    def __init__(self, root: Any, signature: str, *, name: str, path: Path, batch: bool | None) -> None:
        if signature not in root.signatures:
            raise RegistrationError(
                f"SavedModel {str(path)!r} has no signature {signature!r} "
                f"(it has: {', '.join(root.signatures) or 'none'})"
            )
        #: Keeps the variables the signature reads alive.
        self.root = root
        self.function = root.signatures[signature]
        args, kwargs = self.function.structured_input_signature
        outputs = self.function.structured_outputs
        if args or not isinstance(outputs, dict):
            raise RegistrationError(f"SavedModel {str(path)!r}: signature {signature!r} is not a named signature")
        # TensorFlow does not keep a stable order across loads; sort so the .proto is stable.
        kwargs = dict(sorted(kwargs.items()))
        outputs = dict(sorted(outputs.items()))
        in_specs = [_spec(s, path, f"input {n!r}") for n, s in kwargs.items()]
        out_specs = [_spec(s, path, f"output {n!r}") for n, s in outputs.items()]
        batchable = all(s.shape and s.shape[0] is None for s in in_specs + out_specs)
        if batch and not batchable:
            raise RegistrationError(
                f"SavedModel {str(path)!r} cannot be batched: every input and output needs a dynamic first dimension"
            )
        named = batchable and batch is not False
        in_specs = [TFTensorSpec(s.dtypes, s.shape, named) for s in in_specs]
        out_specs = [TFTensorSpec(s.dtypes, s.shape, named) for s in out_specs]
        self.input_names = list(kwargs)
        self.output_names = list(outputs)
        params = list(zip(field_names(self.input_names, fallback="input"), in_specs, strict=True))
        self._record: type | None = None
        if len(out_specs) == 1:
            result: Any = out_specs[0]
        else:
            fields = zip(field_names(self.output_names, fallback="output"), out_specs, strict=True)
            result = self._record = output_record(f"{pascal_case(name) or 'Model'}Outputs", list(fields))
        attach_signature(self, params, result)
        ins = ", ".join(f"{n}: {s.describe()}" for n, s in params)
        outs = ", ".join(f"{n}: {s.describe()}" for n, s in zip(self.output_names, out_specs, strict=True))
        self.__doc__ = f"SavedModel signature {signature} ({ins}) -> ({outs})"

    def __call__(self, *tensors: Any) -> Any:
        outputs = self.function(**dict(zip(self.input_names, tensors, strict=True)))
        if self._record is None:
            return outputs[self.output_names[0]]
        return self._record(*(outputs[n] for n in self.output_names))


def _spec(tensor_spec: Any, path: Path, what: str) -> TFTensorSpec:
    try:
        dtype = TF.dtype_name(tensor_spec.dtype)
    except RegistrationError as exc:
        raise RegistrationError(f"SavedModel {str(path)!r}: {what}: {exc}") from None
    dims = tensor_spec.shape.as_list() if tensor_spec.shape.rank is not None else None
    return TFTensorSpec((dtype,), None if dims is None else tuple(dims))


def load_model(
    path: str | Path,
    name: str | None = None,
    *,
    signature: str = DEFAULT_SIGNATURE,
    version: str | int = "1",
    batch: bool | None = None,
    max_batch_size: int | None = None,
    batch_timeout_ms: float | None = None,
) -> ModelSpec:
    """A model spec serving a SavedModel directory through ``signature``.

    ``name`` defaults to the directory name. Register it with ``app.add(...)``.
    """
    import tensorflow as tf

    path = Path(path)
    name = file_model_name(path, name)
    if not is_saved_model(path):
        raise RegistrationError(f"{str(path)!r} is not a SavedModel directory (no saved_model.pb in it)")
    try:
        root = tf.saved_model.load(str(path))
    except Exception as exc:
        raise RegistrationError(f"SavedModel {str(path)!r} could not be loaded: {exc}") from exc
    function = SavedModelFunction(root, signature, name=name, path=path, batch=batch)
    batching = BatchSettings(batch=batch, max_batch_size=max_batch_size, batch_timeout_ms=batch_timeout_ms)
    return file_model_spec(function, path, name, version=version, batching=batching)
