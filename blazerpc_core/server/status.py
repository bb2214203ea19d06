"""From an exception raised while serving a call to a gRPC status and a message."""

from __future__ import annotations

from grpclib.const import Status

from blazerpc_core.errors import BlazeError


class ErrorMapper:
    """Maps exceptions to statuses: BlazeErrors carry theirs, registered types map, the rest is INTERNAL.

    ``register(ValueError, Status.INVALID_ARGUMENT)`` lets user exceptions reach clients
    with a meaningful code. With ``hide_details`` an INTERNAL error says only which model
    failed; the full error stays in the server log.
    """

    def __init__(self, *, hide_details: bool = False) -> None:
        self.hide_details = hide_details
        self._types: list[tuple[type[BaseException], Status]] = []

    def register(self, exc_type: type[BaseException], status: Status) -> None:
        self._types.insert(0, (exc_type, status))

    def map(self, exc: BaseException, label: str) -> tuple[Status, str]:
        if isinstance(exc, BlazeError):
            return exc.status, exc.message
        for exc_type, status in self._types:
            if isinstance(exc, exc_type):
                return status, f"{type(exc).__name__}: {exc}"
        if self.hide_details:
            return Status.INTERNAL, f"model {label} failed; see the server log"
        return Status.INTERNAL, f"model {label} raised {type(exc).__name__}: {exc}"
