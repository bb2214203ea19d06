"""Converting whole messages: field values in, Python values out, and back.

Shared by nested messages (dataclasses, NamedTuples) and by the request and response
messages of every rpc, so presence and error rules are the same everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from blazerpc_core.errors import BlazeError, InvalidArgument
from blazerpc_core.schema.fields import FieldMapping

log = logging.getLogger("blazerpc.codec")

#: The most characters of a converter's error kept in a status message. Converters
#: (plugins' included) may quote what the client sent, and grpclib encodes the status
#: on the event loop.
MESSAGE_LIMIT = 400


def _capped(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else f"{text[:MESSAGE_LIMIT]}… ({len(text)} chars)"


class MessageCodec:
    """Reads and writes the fields of one message by name.

    ``decode`` returns Python values in field order; an absent optional field is None, an
    absent required message field is ``default`` (or an INVALID_ARGUMENT error when there is
    no default). Whatever a converter raises while decoding is the request's fault, so it
    becomes INVALID_ARGUMENT naming the field. ``encode`` returns constructor keyword arguments.
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
                raise InvalidArgument(f"{self._what} {name!r}: {_capped(exc.message)}") from None
            except BlazeError:
                raise  # a converter's own status (a plugin's RESOURCE_EXHAUSTED, say) stands
            except Exception as exc:
                # A converter that chokes on what the client sent (numpy's ValueError on a
                # reshape, a plugin's TypeError) is answering bad input, not failing.
                log.debug("decoding %s %r failed", self._what, name, exc_info=True)
                raise InvalidArgument(
                    f"{self._what} {name!r} could not be decoded: {type(exc).__name__}: {_capped(_text(exc))}"
                ) from exc
        return values

    def encode(self, values: Sequence[Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for (name, encode), value in zip(self._writers, values, strict=True):
            if value is None:
                continue
            kwargs[name] = value if encode is None else encode(value)
        return kwargs


def _text(exc: Exception) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose message cannot be built says enough by its type
        return ""
