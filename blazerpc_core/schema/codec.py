"""Converting whole messages: field values in, Python values out, and back.

Shared by nested messages (dataclasses, NamedTuples) and by the request and response
messages of every rpc, so presence and error rules are the same everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from blazerpc_core.errors import InvalidArgument
from blazerpc_core.schema.fields import FieldMapping

_MISSING = object()


class MessageCodec:
    """Reads and writes the fields of one message by name.

    ``decode`` returns Python values in field order; an absent optional field is None, an
    absent required message field is ``default`` (or an INVALID_ARGUMENT error when there is
    no default). ``encode`` returns constructor keyword arguments.
    """

    def __init__(
        self,
        fields: Sequence[tuple[str, FieldMapping]],
        *,
        defaults: dict[str, Any] | None = None,
        what: str = "field",
    ) -> None:
        self.names = tuple(name for name, _ in fields)
        self._what = what
        defaults = defaults or {}
        self._readers = tuple(
            (
                name,
                mapping.decode,
                (mapping.optional or mapping.is_message) and not mapping.repeated,
                mapping.required and name not in defaults,
                defaults.get(name, None),
            )
            for name, mapping in fields
        )
        self._writers = tuple((name, mapping.encode) for name, mapping in fields)

    def decode(self, message: Any) -> list[Any]:
        values = []
        for name, decode, has_presence, required, default in self._readers:
            if has_presence and not message.HasField(name):
                if required:
                    raise InvalidArgument(f"missing {self._what} {name!r}")
                values.append(default)
                continue
            raw = getattr(message, name)
            if decode is None:
                values.append(raw)
                continue
            try:
                values.append(decode(raw))
            except InvalidArgument as exc:
                raise InvalidArgument(f"{self._what} {name!r}: {exc.message}") from None
        return values

    def encode(self, values: Sequence[Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for (name, encode), value in zip(self._writers, values, strict=True):
            if value is None:
                continue
            kwargs[name] = value if encode is None else encode(value)
        return kwargs
