"""Error types that carry a gRPC status, so every failure reaches the client with the right code."""

from __future__ import annotations

import reprlib
from collections.abc import Sequence

from grpclib.const import Status


class BlazeError(Exception):
    """An error answered to the client with ``status`` and a message a person can act on."""

    status: Status = Status.INTERNAL

    def __init__(self, message: str, *, status: Status | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class InvalidArgument(BlazeError):
    """The request is malformed: bad dtype, shape, length, missing or undecodable input."""

    status = Status.INVALID_ARGUMENT


class ResourceExhausted(BlazeError):
    """The server refuses work it cannot take: queue full, rate limited, message too big."""

    status = Status.RESOURCE_EXHAUSTED


class Unavailable(BlazeError):
    """The server is starting up or draining."""

    status = Status.UNAVAILABLE


class NotFound(BlazeError):
    """What the call names (a model, a version, a source) does not exist."""

    status = Status.NOT_FOUND


class AlreadyExists(BlazeError):
    """What the call would create (a loaded model) is there already."""

    status = Status.ALREADY_EXISTS


class FailedPrecondition(BlazeError):
    """The server is not set up to do this (e.g. changing models without ``--model-control``)."""

    status = Status.FAILED_PRECONDITION


class DeadlineExceeded(BlazeError):
    """The client's deadline passed before the work was done."""

    status = Status.DEADLINE_EXCEEDED


class Cancelled(BlazeError):
    """The client went away."""

    status = Status.CANCELLED


class Unauthenticated(BlazeError):
    """Credentials are missing or wrong."""

    status = Status.UNAUTHENTICATED


class PermissionDenied(BlazeError):
    """Credentials are valid but not allowed to call this model."""

    status = Status.PERMISSION_DENIED


def client_text(value: object, limit: int = 64) -> str:
    """A short, printable rendering of something a client sent, for a status message.

    Status messages travel in HTTP/2 trailers that grpclib HPACK-encodes on the event
    loop, so echoing a client's megabyte string would stall every call on the server.
    Strings and bytes keep their first ``limit`` characters and note the full length
    (``'fl…' (1048576 chars)``); sequences show their first items and their length
    (``[1, 1, 1, …] (100000 items)``); anything else is cut at ``limit`` characters.
    """
    if isinstance(value, (str, bytes, bytearray)):
        if len(value) <= limit:
            return repr(value)
        head = repr(value[:limit])
        unit = "chars" if isinstance(value, str) else "bytes"
        return f"{head[:-1]}…{head[-1]} ({len(value)} {unit})"
    if isinstance(value, Sequence):
        items: list[str] = []
        used = 0
        for item in value[: limit // 2 + 1]:
            if used > limit:
                break
            items.append(client_text(item, limit))
            used += len(items[-1]) + 2
        if len(items) == len(value):
            return f"[{', '.join(items)}]"
        return f"[{', '.join(items)}, …] ({len(value)} items)"
    short = reprlib.Repr()  # bounded work even for a large dict
    short.maxstring = short.maxother = limit
    try:
        text = short.repr(value)
    except Exception:  # e.g. an int too long to print; the type is all a reader needs
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[:limit]}…"


class RegistrationError(ValueError):
    """A model, type or plugin was refused at build time; raised where it was registered."""


class StartupError(RuntimeError):
    """The server could not start (its port is taken, a startup hook failed); the message says why."""


class PluginError(RuntimeError):
    """A plugin failed to load or declared an unknown hook; the message names the plugin."""
