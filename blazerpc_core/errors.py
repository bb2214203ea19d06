"""Error types that carry a gRPC status, so every failure reaches the client with the right code."""

from __future__ import annotations

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


class RegistrationError(ValueError):
    """A model, type or plugin was refused at build time; raised where it was registered."""


class PluginError(RuntimeError):
    """A plugin failed to load or declared an unknown hook; the message names the plugin."""
