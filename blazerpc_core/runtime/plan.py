"""Which models are batched, and how one batch is joined from requests and split back.

A model *can* be batched when every input and output has a leading batch dimension (its
field mapping carries a :class:`~blazerpc_core.schema.fields.BatchAxis`). It *is* batched
when it opts in (``BatchSettings.opted_in()``) or when one of its tensors names its first
dimension ``"batch"``; ``batch=False`` always wins. Opting in a model that cannot be
batched is refused at registration, because serving it unbatched would silently ignore
what its author asked for.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from blazerpc_core.errors import BlazeError, InvalidArgument, RegistrationError
from blazerpc_core.schema.fields import BatchAxis, FieldMapping
from blazerpc_core.spec import ModelSpec, Streaming

if TYPE_CHECKING:
    from blazerpc_core.method import CompiledModel

Fields = Sequence[tuple[str, FieldMapping]]


@dataclass(frozen=True)
class BatchPlan:
    """How one model's requests become one call and its result becomes one answer per request."""

    label: str
    inputs: tuple[tuple[str, BatchAxis], ...]
    outputs: tuple[tuple[str, BatchAxis], ...]
    output_record: type | None = None

    def rows(self, args: Sequence[Any]) -> int:
        """Rows in one request; INVALID_ARGUMENT unless every input has the same count."""
        inputs = self.inputs
        first_rows = _rows_of(self.label, inputs[0], args[0])
        for index in range(1, len(inputs)):
            rows = _rows_of(self.label, inputs[index], args[index])
            if rows != first_rows:
                raise InvalidArgument(
                    f"model {self.label} is batched, so every input needs the same number of rows: "
                    f"{inputs[0][0]!r} has {first_rows}, {inputs[index][0]!r} has {rows}"
                )
        return first_rows

    def shape_key(self, args: Sequence[Any]) -> Hashable:
        """Requests with different keys cannot be concatenated (trailing dims or dtype differ)."""
        key: Hashable = None
        for value in args:
            shape = getattr(value, "shape", None)
            if shape is not None:
                # The dtype object itself: hashable, and far cheaper than its str() per request.
                key = (key, tuple(shape)[1:], getattr(value, "dtype", None))
        return key

    def join(self, parts: Sequence[Sequence[Any]]) -> list[Any]:
        """The arguments of one call: each input concatenated along its batch dimension."""
        if len(parts) == 1:
            return list(parts[0])
        return [axis.concat([p[i] for p in parts]) for i, (_, axis) in enumerate(self.inputs)]

    def split(self, result: Any, sizes: Sequence[int]) -> list[Any]:
        """One outcome per request: its share of ``result``, or the exception found in its rows.

        Raises an INTERNAL :class:`BlazeError` when an output's row count does not match the
        batch, since no request's share can be trusted then.
        """
        outputs = self.outputs
        if not outputs:
            return [None] * len(sizes)
        total = sizes[0] if len(sizes) == 1 else sum(sizes)
        record = self.output_record
        if record is None:
            # One output, the result itself: the common case, kept short (it runs per request).
            self._check_rows(outputs[0], result, total)
            if len(sizes) == 1:
                return [_first_failure(result) or result]
            values = [result]
        else:
            values = [getattr(result, name) for name, _ in outputs]
            for output, value in zip(outputs, values, strict=True):
                self._check_rows(output, value, total)
            if len(sizes) == 1:
                return [self._outcome(values)]
        pieces = [
            # A plain list also carries per-row results (and exceptions) for tensor outputs.
            _split_list(value, sizes) if isinstance(value, list) else axis.split(value, sizes)
            for (_, axis), value in zip(outputs, values, strict=True)
        ]
        return [self._outcome([piece[index] for piece in pieces]) for index in range(len(sizes))]

    def _check_rows(self, output: tuple[str, BatchAxis], value: Any, total: int) -> None:
        """INTERNAL unless ``value`` (an output of the batch's result) has ``total`` rows."""
        name, axis = output
        try:
            rows: int | None = axis.rows(value)
        except Exception:
            rows = None
        if rows != total:
            got = f"{rows} rows" if rows is not None else f"a {type(value).__name__} without rows"
            where = "its result" if self.output_record is None else f"output {name!r}"
            raise BlazeError(
                f"batched model {self.label} returned {got} in {where} for a batch of {total} rows; "
                "a batched model must return one row per input row"
            )

    def _outcome(self, parts: list[Any]) -> Any:
        """One request's answer from its share of each output, or the exception found in its rows."""
        for part in parts:
            failure = _first_failure(part)
            if failure is not None:
                return failure
        if self.output_record is not None:
            return self.output_record(**{n: p for (n, _), p in zip(self.outputs, parts, strict=True)})
        return parts[0]


def _split_list(value: list[Any], sizes: Sequence[int]) -> list[list[Any]]:
    out, start = [], 0
    for size in sizes:
        out.append(value[start : start + size])
        start += size
    return out


def _first_failure(part: Any) -> BaseException | None:
    """The first exception among the rows of ``part`` (only a plain list can carry them)."""
    if isinstance(part, list):
        for row in part:
            if isinstance(row, BaseException):
                return row
    return None


def _rows_of(label: str, field: tuple[str, BatchAxis], value: Any) -> int:
    name, axis = field
    try:
        return axis.rows(value)
    except Exception:
        raise InvalidArgument(f"input {name!r} of batched model {label} has no leading batch dimension") from None


def unbatchable_reason(spec: ModelSpec, inputs: Fields, outputs: Fields) -> str | None:
    """Why ``spec`` cannot be batched, or None when every input and output has a batch axis."""
    if spec.streaming is not Streaming.UNARY:
        return f"it is {spec.streaming.value} (streaming models are never batched)"
    if not inputs:
        return "it takes no inputs, so requests have no rows"
    for name, mapping in inputs:
        if mapping.batch is None:
            return f"parameter {name!r} ({mapping.description}) has no leading batch dimension"
    for name, mapping in outputs:
        if mapping.batch is None:
            where = "its return type" if name == "result" else f"output field {name!r}"
            return f"{where} ({mapping.description}) has no leading batch dimension"
    return None


def plan_batching(
    spec: ModelSpec, inputs: Fields, outputs: Fields, output_record: type | None = None
) -> BatchPlan | None:
    """The plan when ``spec`` is batched, None when it is served one call per request.

    Raises :class:`RegistrationError` when the model opts in but cannot be batched.
    """
    settings = spec.batching
    if settings.batch is False:
        return None
    reason = unbatchable_reason(spec, inputs, outputs)
    if reason is not None:
        if settings.opted_in():
            raise RegistrationError(
                f"model {spec.label} opts in to batching ({_how(spec)}) but cannot be batched: {reason}. "
                "Every input and output of a batched model must be list[T] or a tensor whose first "
                "dimension is dynamic ('batch', None or -1); pass batch=False to serve it one call "
                "per request."
            )
        return None
    named = any(m.batch is not None and m.batch.named for _, m in (*inputs, *outputs))
    if not (settings.opted_in() or named):
        return None
    return BatchPlan(
        label=spec.label,
        inputs=tuple((n, m.batch) for n, m in inputs if m.batch is not None),
        outputs=tuple((n, m.batch) for n, m in outputs if m.batch is not None),
        output_record=output_record,
    )


def batch_plan(model: CompiledModel) -> BatchPlan | None:
    """:func:`plan_batching` for a compiled model."""
    return plan_batching(model.spec, model.input_fields, model.output_fields, model.output_record)


def _how(spec: ModelSpec) -> str:
    knobs = {k: v for k, v in vars(spec.batching).items() if v is not None}
    return ", ".join(f"{k}={v!r}" for k, v in knobs.items()) + " on the model or its app"
