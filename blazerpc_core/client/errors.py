"""The one exception a failed call raises, carrying what an operator needs to find it."""

from __future__ import annotations

from collections.abc import Mapping

from grpclib.const import Status

#: Trailer in which a blazerpc server returns the id it logged the call under.
REQUEST_ID = "x-request-id"
#: Trailer in which a rate-limited server says when to come back.
RETRY_AFTER = "retry-after-ms"


class CallError(Exception):
    """A call failed with gRPC ``status``; ``message`` is the server's (or the client's) explanation.

    ``request_id`` is the server's ``x-request-id`` trailer when it sent one, so a bug
    report can quote the log line; ``address`` is the server that answered (None when no
    server was reached, e.g. a deadline that passed while waiting to retry). ``trailers``
    holds the rest of the trailing metadata.
    """

    def __init__(
        self,
        status: Status,
        message: str = "",
        *,
        address: str | None = None,
        request_id: str | None = None,
        trailers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.address = address
        self.request_id = request_id
        self.trailers: dict[str, str] = dict(trailers or {})

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked us to wait (its ``retry-after-ms`` trailer), if any."""
        raw = self.trailers.get(RETRY_AFTER)
        try:
            return max(0.0, float(raw) / 1000.0) if raw is not None else None
        except ValueError:
            return None

    def __str__(self) -> str:
        where = [part for part in (self.address and f"server {self.address}",
                                   self.request_id and f"request id {self.request_id}") if part]
        suffix = f" ({', '.join(where)})" if where else ""
        return f"{self.status.name}: {self.message}{suffix}"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive the default pickling of exceptions.
        return (_rebuild, (self.status, self.message, self.address, self.request_id, self.trailers))


def _rebuild(
    status: Status, message: str, address: str | None, request_id: str | None, trailers: dict[str, str]
) -> CallError:
    return CallError(status, message, address=address, request_id=request_id, trailers=trailers)
