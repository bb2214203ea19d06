"""Request ids: honour the client's ``x-request-id`` or make one, and return it in trailers.

The id is stored in ``ctx.request_id`` for later middleware (access log, tracing)
and sent back in the ``x-request-id`` trailer, so a client can quote it in a bug report
and an operator can find the matching log line.
"""

from __future__ import annotations

import itertools
import re
import secrets
from typing import TYPE_CHECKING, Any

from blazerpc_core.markers import hookimpl

if TYPE_CHECKING:
    from collections.abc import Sequence

    from blazerpc_core.call import CallContext, CallNext, Middleware
    from blazerpc_core.settings import ServeSettings

HEADER = "x-request-id"
# Ids end up in log lines and trailers: refuse anything that could forge a log field.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


class RequestIdMiddleware:
    """Gives every call an id: the client's own when it is sane, else ``<server>-<counter>``.

    A random per-server prefix and a counter are unique enough across replicas and much
    cheaper than a UUID per call.
    """

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(6)
        self._counter = itertools.count(1)

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        request_id = ctx.metadata.get(HEADER)
        if request_id is None or _ACCEPTED.fullmatch(request_id) is None:
            request_id = self.new_id()
        ctx.request_id = request_id
        ctx.trailing_metadata[HEADER] = request_id
        return await call_next(ctx)


@hookimpl
def blazerpc_middleware(settings: ServeSettings) -> Sequence[Middleware]:
    return [RequestIdMiddleware()]
