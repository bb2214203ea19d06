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
        self._types: dict[type[BaseException], Status] = {}

    def register(self, exc_type: type[BaseException], status: Status) -> None:
        """Answer ``exc_type`` (and subclasses) with ``status``; a later call for one type wins."""
        self._types[exc_type] = status

    def map(self, exc: BaseException, label: str) -> tuple[Status, str]:
        if isinstance(exc, BlazeError):
            return exc.status, exc.message
        # The most specific registered class wins, whatever the registration order.
        for exc_type in type(exc).__mro__:
            status = self._types.get(exc_type)
            if status is not None:
                return status, f"{type(exc).__name__}: {exc}"
        if self.hide_details:
            return Status.INTERNAL, f"model {label} failed; see the server log"
        return Status.INTERNAL, f"model {label} raised {type(exc).__name__}: {exc}"


#: A client whose deadline passes resets the stream itself, usually a moment before the
#: server's own timer fires (the server's copy of the deadline starts when the headers
#: arrive); a call cut short this close to its deadline was cut short by the deadline.
DEADLINE_SLACK_S = 0.05


def cut_short_status(time_remaining: float | None) -> Status:
    """DEADLINE_EXCEEDED or CANCELLED, for a call that ended before it finished."""
    if time_remaining is not None and time_remaining <= DEADLINE_SLACK_S:
        return Status.DEADLINE_EXCEEDED
    return Status.CANCELLED
