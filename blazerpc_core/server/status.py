"""From an exception raised while serving a call to a gRPC status and a message a client may see."""

from __future__ import annotations

import re

from grpclib.const import Status

from blazerpc_core.errors import BlazeError

#: Longest status message sent to a client, in characters. grpclib encodes the message
#: (and HPACK the header) on the event loop, so an unbounded one stalls every call.
MAX_STATUS_MESSAGE = 512
#: An absolute path, or the ``File "..."`` lines of a traceback.
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:[\\/][\w.@+-]+){2,}")


def cap_message(text: str, limit: int = MAX_STATUS_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    kept = limit - len(f"... ({len(text)} more characters)")
    return f"{text[:kept]}... ({len(text) - kept} more characters)"


def public_text(exc: BaseException) -> str:
    """What a client may read of an exception: its first line, server paths reduced to file names."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    return _PATH.sub(lambda match: re.split(r"[\\/]", match.group(0))[-1], first)


class ErrorMapper:
    """Maps exceptions to statuses: BlazeErrors carry theirs, registered types map, the rest is INTERNAL.

    ``register(ValueError, Status.INVALID_ARGUMENT)`` lets user exceptions reach clients
    with a meaningful code. The message names the exception type and the first line of its
    text, with server file paths cut to file names; ``full_details`` sends the whole text
    instead, and ``hide_details`` makes an INTERNAL error say only which model failed.
    The full error always stays in the server log.
    """

    def __init__(self, *, hide_details: bool = False, full_details: bool = False) -> None:
        self.hide_details = hide_details
        self.full_details = full_details
        self._types: dict[type[BaseException], Status] = {}

    def register(self, exc_type: type[BaseException], status: Status) -> None:
        """Answer ``exc_type`` (and subclasses) with ``status``; a later call for one type wins."""
        self._types[exc_type] = status

    def map(self, exc: BaseException, label: str) -> tuple[Status, str]:
        if isinstance(exc, BlazeError):
            return exc.status, exc.message
        text = str(exc) if self.full_details else public_text(exc)
        # The most specific registered class wins, whatever the registration order.
        for exc_type in type(exc).__mro__:
            status = self._types.get(exc_type)
            if status is not None:
                return status, f"{type(exc).__name__}: {text}"
        if self.hide_details:
            return Status.INTERNAL, f"model {label} failed; see the server log"
        return Status.INTERNAL, f"model {label} raised {type(exc).__name__}: {text}"


#: A client whose deadline passes resets the stream itself, usually a moment before the
#: server's own timer fires (the server's copy of the deadline starts when the headers
#: arrive); a call cut short this close to its deadline was cut short by the deadline.
DEADLINE_SLACK_S = 0.05


def cut_short_status(time_remaining: float | None) -> Status:
    """DEADLINE_EXCEEDED or CANCELLED, for a call that ended before it finished."""
    if time_remaining is not None and time_remaining <= DEADLINE_SLACK_S:
        return Status.DEADLINE_EXCEEDED
    return Status.CANCELLED
