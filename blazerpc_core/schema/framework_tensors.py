"""Framework tensors on the wire: what the torch and TensorFlow plugins (and any other) share.

A framework plugin carries its tensors in the same ``TensorProto`` as numpy arrays (see
:mod:`blazerpc_core.schema.tensors`), plus ``bfloat16``, which numpy lacks. Only a few
primitives differ between frameworks (dtype objects, wrapping bytes, casting, joining and
splitting); the rest lives here once, so every framework takes the same annotations, checks
requests the same way and gives the same errors:

* the annotation ``X[dtype, *dims]`` becomes a :class:`FrameworkTensorSpec` subclass;
* decoding checks the dtype name, the declared dtypes, rank, fixed dimensions and byte count
  before the framework sees a byte;
* encoding casts to a single declared dtype, checks the shape and sends C-order
  little-endian bytes;
* batching joins and splits along the first dimension, and :meth:`FrameworkTensors.map_type`
  answers the type-mapping hook.

A plugin subclasses :class:`FrameworkTensors`, implements the primitives and imports its
framework inside them, so loading the plugin never imports the framework.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from blazerpc_core.errors import InvalidArgument, RegistrationError, client_text
from blazerpc_core.schema.fields import BatchAxis, FieldMapping, TypeContext
from blazerpc_core.schema.tensors import (
    WIRE_DTYPES,
    Dim,
    TensorSpec,
    check_shape,
    checked_payload,
    describe_dims,
    parse_dims,
    split_annotation,
    tensor_mapping,
)

BFLOAT16 = "bfloat16"
#: The dtype names a framework tensor may carry: the numpy wire dtypes, plus bfloat16
#: (raw 2-byte values; numpy reads them through ``ml_dtypes``).
FRAMEWORK_DTYPES: tuple[str, ...] = (*WIRE_DTYPES, BFLOAT16)
_ITEMSIZE: dict[str, int] = {name: np.dtype(name).itemsize for name in WIRE_DTYPES} | {BFLOAT16: 2}


@dataclass(frozen=True)
class FrameworkTensorSpec:
    """A framework plugin's declared tensor: wire dtype names (None: any), shape (None: any rank).

    A single dtype is also what a returned tensor is cast to; ``batch_named`` marks a first
    dimension called ``"batch"``, which turns batching on. Plugins subclass it, naming
    their tensors in ``kind`` (``"torch tensor"``), so their type hook recognises their own.
    """

    kind: ClassVar[str] = "tensor"
    dtypes: tuple[str, ...] | None
    shape: tuple[Dim, ...] | None
    batch_named: bool = False

    @property
    def core(self) -> TensorSpec:
        """The dtype-less core spec, for the shared shape checks."""
        return TensorSpec(None, self.shape, self.batch_named)

    @property
    def batchable(self) -> bool:
        """Rank unknown counts: a bare framework tensor may be batched when the model opts in."""
        return self.shape is None or self.core.batchable

    def describe(self) -> str:
        dtype = "any" if self.dtypes is None else "|".join(self.dtypes)
        return f"{self.kind} {dtype}{describe_dims(self.shape, self.batch_named)}"


class FrameworkTensors(abc.ABC):
    """One framework's tensors: the plugin implements the primitives, the rest is shared.

    Set :attr:`framework` and :attr:`spec_type` (the plugin's :class:`FrameworkTensorSpec`
    subclass), then implement the abstract methods. Make one instance: its :meth:`map_type`
    answers ``blazerpc_map_type`` and its :meth:`annotation` reads the plugin's
    ``X[dtype, *dims]`` annotation.
    """

    #: Names the framework in field mappings (``extra["framework"]``): ``"torch"``.
    framework: ClassVar[str]
    #: The plugin's spec class; its ``kind`` names the tensors in messages.
    spec_type: ClassVar[type[FrameworkTensorSpec]] = FrameworkTensorSpec
    #: The dtype names the framework can carry (a build may have fewer: :meth:`available`).
    dtypes: ClassVar[tuple[str, ...]] = FRAMEWORK_DTYPES

    # -- primitives, one framework each ------------------------------------------------

    @abc.abstractmethod
    def tensor_type(self) -> Any | None:
        """The framework's tensor class (``torch.Tensor``) once user code imported it, else None.

        Look it up in ``sys.modules``: the type hook must not import the framework.
        """

    @abc.abstractmethod
    def native_name(self, dtype: Any) -> str | None:
        """The name of one of the framework's own dtype objects (``torch.float32`` → ``"float32"``), else None."""

    def available(self) -> Collection[str]:
        """The dtype names this build of the framework has (default: all of :attr:`dtypes`)."""
        return self.dtypes

    @abc.abstractmethod
    def from_bytes(self, data: bytes, dtype: str, shape: list[int]) -> Any:
        """A framework tensor of ``dtype`` and ``shape`` over ``data`` (already checked to fit); avoid a copy."""

    @abc.abstractmethod
    def to_tensor(self, value: Any) -> Any:
        """What a model returned (a framework tensor, an array, a list) as a tensor to encode."""

    @abc.abstractmethod
    def dtype_of(self, tensor: Any) -> str:
        """The dtype name of a tensor made by :meth:`to_tensor` (one outside :attr:`dtypes` is refused)."""

    @abc.abstractmethod
    def cast(self, tensor: Any, dtype: str) -> Any:
        """``tensor`` converted to the dtype named ``dtype``."""

    @abc.abstractmethod
    def shape_of(self, tensor: Any) -> tuple[int, ...]:
        """A tensor's shape."""

    @abc.abstractmethod
    def to_bytes(self, tensor: Any) -> bytes:
        """A tensor's values as C-order little-endian bytes (bfloat16: raw 2-byte values)."""

    @abc.abstractmethod
    def concat(self, parts: Sequence[Any]) -> Any:
        """Tensors joined along the first dimension (one batch from several requests)."""

    @abc.abstractmethod
    def split(self, tensor: Any, sizes: Sequence[int]) -> list[Any]:
        """A tensor cut along the first dimension into pieces of ``sizes`` rows (one per request)."""

    def prepare(self) -> None:
        """Called for every field mapping while the server is built: one-time framework setup (default: none)."""
        return None

    # -- shared -------------------------------------------------------------------------

    def dtype_name(self, dtype: Any) -> str:
        """A framework dtype, a numpy dtype or a name → its wire name; refuses what the framework cannot carry."""
        if isinstance(dtype, str) and dtype in self.dtypes:
            return dtype
        name = self.native_name(dtype)
        if name is None:
            try:
                name = np.dtype(dtype).name
            except Exception:  # numpy raises TypeError, ValueError or SyntaxError on what it cannot parse
                raise RegistrationError(f"{dtype!r} is not a tensor dtype") from None
        if name not in self.dtypes:
            raise RegistrationError(
                f"dtype {name!r} cannot be served as a {self.spec_type.kind} (use one of {', '.join(self.dtypes)})"
            )
        return name

    def annotation(self, args: Any, *, what: str, example: str) -> FrameworkTensorSpec:
        """The spec of ``what[dtype, *dims]`` (the plugin's annotation class calls this from ``__class_getitem__``)."""
        dtype, dims = split_annotation(args, what=what, example=example)
        return self.spec_type((self.dtype_name(dtype),), *parse_dims(dims))

    def decode(self, message: Any, spec: FrameworkTensorSpec) -> Any:
        """A framework tensor from a ``TensorProto``, after dtype, shape and byte-count checks."""
        name = message.dtype
        if not name:
            raise InvalidArgument("tensor has no dtype")
        if name not in self.dtypes:
            prefixed = name.startswith(("<", ">", "=", "|"))
            hint = " (data is always little-endian: send the plain name)" if prefixed else ""
            raise InvalidArgument(
                f"dtype {client_text(name)} is not one a {self.spec_type.kind} can take{hint} "
                f"({', '.join(self.available())})"
            )
        if spec.dtypes is not None and name not in spec.dtypes:
            raise InvalidArgument(f"dtype is {name}, expected {' or '.join(spec.dtypes)}")
        if name not in self.available():
            raise InvalidArgument(f"dtype {name} is not available in this {self.framework} build")
        shape, data = checked_payload(message, spec.core, name, _ITEMSIZE[name])
        return self.from_bytes(data, name, shape)

    def encode(self, value: Any, spec: FrameworkTensorSpec) -> dict[str, Any]:
        """``TensorProto`` fields for a returned value: cast to a single declared dtype, shape checked."""
        tensor = self.to_tensor(value)
        if spec.dtypes is not None and len(spec.dtypes) == 1 and self.dtype_of(tensor) != spec.dtypes[0]:
            tensor = self.cast(tensor, spec.dtypes[0])
        shape = tuple(int(d) for d in self.shape_of(tensor))
        check_shape(shape, spec.core, what="returned tensor")
        name = self.dtype_of(tensor)
        if name not in self.dtypes:
            raise TypeError(f"a {self.spec_type.kind} of dtype {name} cannot travel in a TensorProto")
        return {"shape": shape, "dtype": name, "data": self.to_bytes(tensor)}

    def rows(self, tensor: Any) -> int:
        """The size of a tensor's first (batch) dimension."""
        return int(self.shape_of(tensor)[0])

    def axis(self, named: bool) -> BatchAxis:
        """Join requests with :meth:`concat` and split results with :meth:`split` along the first dimension."""
        return BatchAxis(rows=self.rows, concat=self.concat, split=self.split, named=named)

    def mapping(self, context: TypeContext, spec: FrameworkTensorSpec) -> FieldMapping:
        """A ``TensorProto`` field whose values are this framework's tensors."""
        self.prepare()
        mapping = tensor_mapping(
            context,
            spec.core,
            decode=lambda message: self.decode(message, spec),
            encode=lambda value: self.encode(value, spec),
            batch=self.axis(spec.batch_named) if spec.batchable else None,
        )
        return replace(mapping, description=spec.describe(), extra={"tensor": spec.core, "framework": self.framework})

    def map_type(self, annotation: Any, context: TypeContext) -> FieldMapping | None:
        """The ``blazerpc_map_type`` answer: the plugin's annotation, or the bare tensor class (any dtype and shape)."""
        if isinstance(annotation, self.spec_type):
            return self.mapping(context, annotation)
        bare = self.tensor_type()
        if bare is not None and annotation is bare:
            return self.mapping(context, self.spec_type(None, None))
        return None
