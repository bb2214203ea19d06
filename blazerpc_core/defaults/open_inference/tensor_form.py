"""The tensor form of a model: how its parameters and outputs appear as named, typed, shaped tensors.

Each parameter is an input and each output field an output, named as in Python:

=====================================  ===================  ==============================
annotation                             datatype             shape
=====================================  ===================  ==============================
``float`` / ``int`` / ``bool``        FP64 / INT64 / BOOL  ``[1]``
``str`` / ``bytes``                    BYTES                ``[1]``
``list[T]`` of those                   as ``T``             ``[-1]`` (the batch, if batched)
``TensorInput[dtype, *dims]``          from ``dtype``       ``dims``, ``-1`` for any size
``numpy.ndarray``, framework tensors   any                  any rank (listed as ``[-1]``)
=====================================  ===================  ==============================

Maps, enums, nested messages (other than tensors) and client streams have no tensor form;
the model is then listed with the reason, naming the parameter. A tensor form is worked
out once per compiled model and kept while that model is served.
"""

from __future__ import annotations

import enum
import inspect
from dataclasses import dataclass, field, replace
from typing import Any

from blazerpc_core.defaults.open_inference.datatypes import BY_WIRE, BYTES, DATATYPES, Datatype
from blazerpc_core.method import CompiledModel
from blazerpc_core.runtime.plan import BatchPlan, batch_plan
from blazerpc_core.schema.fields import FieldMapping, T
from blazerpc_core.schema.tensors import TensorSpec
from blazerpc_core.spec import Streaming

#: Datatype of each scalar protobuf field type a type mapping may produce.
_SCALAR_DATATYPES: dict[int, str] = {
    T.TYPE_DOUBLE: "FP64", T.TYPE_FLOAT: "FP32", T.TYPE_INT64: "INT64", T.TYPE_SINT64: "INT64",
    T.TYPE_SFIXED64: "INT64", T.TYPE_UINT64: "UINT64", T.TYPE_FIXED64: "UINT64", T.TYPE_INT32: "INT32",
    T.TYPE_SINT32: "INT32", T.TYPE_SFIXED32: "INT32", T.TYPE_UINT32: "UINT32", T.TYPE_FIXED32: "UINT32",
    T.TYPE_BOOL: "BOOL", T.TYPE_STRING: BYTES, T.TYPE_BYTES: BYTES,
}


class Kind(enum.Enum):
    """How one tensor maps to a Python value."""

    #: One element, shape ``[1]``: a Python scalar, ``str`` or ``bytes``.
    SCALAR = "scalar"
    #: One dimension of any length: a Python list.
    LIST = "list"
    #: A tensor field (numpy or a framework's), decoded by the field's own converter.
    TENSOR = "tensor"


@dataclass(frozen=True)
class TensorIO:
    """One input or output of a model's tensor form."""

    name: str
    kind: Kind
    #: The protocol datatype; None for a tensor that takes any datatype.
    datatype: Datatype | None
    #: Shape as listed by ModelMetadata (-1: any size); for a tensor of any rank, ``(-1,)``.
    shape: tuple[int, ...]
    mapping: FieldMapping
    #: The declared tensor (TENSOR kind only); its ``shape`` None means any rank.
    tensor: TensorSpec | None = None
    #: A ``str`` (UTF-8 text) rather than ``bytes``, for BYTES.
    text: bool = False
    #: May be left out of a request (a parameter with a default, or ``T | None``); or an output that may be None.
    optional: bool = False
    #: The value a left-out input takes.
    default: Any = None

    @property
    def datatype_name(self) -> str:
        """The datatype as listed; ``""`` for a tensor whose dtype the model leaves open."""
        return "" if self.datatype is None else self.datatype.name

    def describe(self) -> str:
        return f"{self.datatype_name or 'any datatype'} {list(self.shape)}"


@dataclass(frozen=True)
class TensorForm:
    """A model's inputs and outputs as tensors, or why it has none (``reason``)."""

    model: CompiledModel
    inputs: tuple[TensorIO, ...]
    outputs: tuple[TensorIO, ...]
    #: Why the model has no tensor form ("" when it has one), naming the parameter or output.
    reason: str
    #: Set when the model is batched: its first dimension is the batch.
    plan: BatchPlan | None
    #: One request, many responses (a server-streaming model).
    decoupled: bool

    @property
    def batched(self) -> bool:
        return self.plan is not None

    def input(self, name: str) -> TensorIO | None:
        return self._inputs_by_name.get(name)

    def output(self, name: str) -> TensorIO | None:
        return self._outputs_by_name.get(name)

    _inputs_by_name: dict[str, TensorIO] = field(init=False, repr=False, compare=False)
    _outputs_by_name: dict[str, TensorIO] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_inputs_by_name", {io.name: io for io in self.inputs})
        object.__setattr__(self, "_outputs_by_name", {io.name: io for io in self.outputs})


class NoTensorForm(Exception):
    """A parameter or output has no tensor form; the message names it."""


def _kind_reason(mapping: FieldMapping) -> str:
    if mapping.map_entry is not None:
        return "a map"
    if mapping.type == T.TYPE_ENUM:
        return "an enum" if not mapping.repeated else "a list of enums"
    if mapping.is_message:
        return "a nested message" if not mapping.repeated else "a list of messages"
    return "a type without a protocol datatype"


def _tensor_io(name: str, mapping: FieldMapping, *, what: str) -> TensorIO:
    """The tensor of one field; raises :class:`NoTensorForm` naming ``what`` when there is none."""
    spec = mapping.extra.get("tensor")
    if mapping.is_message and isinstance(spec, TensorSpec):
        row = None
        if spec.dtype is not None:
            row = BY_WIRE.get(spec.dtype.name)
            if row is None:
                raise NoTensorForm(f"{what} ({mapping.description}) has dtype {spec.dtype.name}, "
                                   "which has no Open Inference datatype")
        shape = (-1,) if spec.shape is None else tuple(-1 if d is None else d for d in spec.shape)
        return TensorIO(name, Kind.TENSOR, row, shape, mapping, tensor=spec, optional=mapping.optional)
    datatype = _SCALAR_DATATYPES.get(mapping.type)
    if datatype is None or mapping.map_entry is not None or mapping.is_message:
        raise NoTensorForm(f"{what} ({mapping.description}) is {_kind_reason(mapping)}, which has no tensor form")
    text = mapping.type == T.TYPE_STRING
    if mapping.repeated:
        return TensorIO(name, Kind.LIST, DATATYPES[datatype], (-1,), mapping, text=text)
    return TensorIO(name, Kind.SCALAR, DATATYPES[datatype], (1,), mapping, text=text, optional=mapping.optional)


def build_form(model: CompiledModel) -> TensorForm:
    """Work out the tensor form of ``model`` (see the module docstring)."""
    spec = model.spec
    plan = batch_plan(model)
    decoupled = spec.streaming is Streaming.SERVER
    inputs: list[TensorIO] = []
    outputs: list[TensorIO] = []
    try:
        if spec.streaming.client_streams:
            raise NoTensorForm(f"parameter {spec.inputs[0][0]!r} is a client stream, which has no tensor form")
        empty = inspect.Parameter.empty
        for (name, mapping), (_, _, default) in zip(model.input_fields, spec.inputs, strict=True):
            io = _tensor_io(name, mapping, what=f"parameter {name!r}")
            if default is not empty:
                io = replace(io, optional=True, default=default)
            inputs.append(io)
        for name, mapping in model.output_fields:
            what = "its return type" if model.output_record is None else f"output {name!r}"
            outputs.append(_tensor_io(name, mapping, what=what))
    except NoTensorForm as exc:
        return TensorForm(model, (), (), str(exc), plan, decoupled)
    return TensorForm(model, tuple(inputs), tuple(outputs), "", plan, decoupled)


class Forms:
    """The tensor form of each served model version, worked out once per compiled model."""

    def __init__(self) -> None:
        self._forms: dict[tuple[str, str], TensorForm] = {}

    def of(self, model: CompiledModel) -> TensorForm:
        key = (model.spec.name, model.spec.version)
        form = self._forms.get(key)
        if form is None or form.model is not model:
            form = self._forms[key] = build_form(model)
        return form


def config_dims(io: TensorIO, batched: bool) -> list[int]:
    """``dims`` of a ModelConfig input or output: the shape without the batch dimension when batched."""
    return list(io.shape[1:]) if batched else list(io.shape)
