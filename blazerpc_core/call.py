"""One call as middleware and the runtime see it, and middleware: per-call code composed once.

A middleware is any object with ``async __call__(ctx, call_next)``. It may inspect
``ctx`` and reject the call by raising a :class:`~blazerpc_core.errors.BlazeError`, await
``call_next(ctx)`` to run the rest of the chain (for unary calls that returns the
model's result, so it can see outputs), add ``ctx.trailing_metadata``, and time or count
the call. ``ctx.status`` holds the final gRPC status name once the server knows it
(streaming calls finish after ``call_next`` returns; see ``ctx.on_done``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from grpclib.metadata import encode_metadata

if TYPE_CHECKING:
    from grpclib.metadata import Deadline

    from blazerpc_core.spec import ModelSpec


log = logging.getLogger("blazerpc.server")


class CallContext:
    """What middleware and the runtime know about one call."""

    __slots__ = (
        "_inputs",
        "_peer",
        "args",
        "deadline",
        "input_names",
        "messages_in",
        "messages_out",
        "metadata",
        "model",
        "on_done",
        "path",
        "principal",
        "request_id",
        "rpc",
        "start",
        "state",
        "status",
        "status_message",
        "trailing_metadata",
    )

    def __init__(
        self,
        *,
        model: ModelSpec,
        rpc: str,
        path: str,
        metadata: Any,
        peer: str | None,
        deadline: Deadline | None,
    ) -> None:
        self.model = model
        self.rpc = rpc
        self.path = path
        #: Request metadata (a multidict of header name → value).
        self.metadata = metadata
        self._peer = peer
        self.deadline = deadline
        #: Free-form per-call storage for third-party middleware.
        self.state: dict[str, Any] = {}
        #: The call's id (set by the ``request-id`` plugin: the client's ``x-request-id`` or a new one).
        self.request_id: str | None = None
        #: Who is calling (set by the ``auth`` plugin: the credential's name).
        self.principal: str | None = None
        #: Decoded arguments, in parameter order (for a client stream: one iterator of items).
        self.args: Sequence[Any] = ()
        #: Parameter names of ``args`` once the request is decoded (unary and server-streaming calls).
        self.input_names: Sequence[str] | None = None
        self._inputs: dict[str, Any] | None = None
        #: Sent to the client in trailers with the final status.
        self.trailing_metadata: dict[str, str] = {}
        self.start = time.perf_counter()
        self.status = "OK"
        self.status_message: str | None = None
        #: Callbacks run with this context once the call has finished and its status is known.
        self.on_done: list[Callable[[CallContext], None]] = []
        self.messages_in = 0
        self.messages_out = 0

    @property
    def peer(self) -> str | None:
        """``host:port`` of the client, or None when unknown."""
        return self._peer

    @property
    def inputs(self) -> dict[str, Any] | None:
        """Decoded inputs by parameter name (unary and server-streaming calls); built when first asked for."""
        if self._inputs is None and self.input_names is not None:
            self._inputs = dict(zip(self.input_names, self.args, strict=True))
        return self._inputs

    @inputs.setter
    def inputs(self, value: dict[str, Any] | None) -> None:
        self._inputs = value

    def trailers(self) -> dict[str, str] | None:
        """``trailing_metadata`` if gRPC can carry it; otherwise None, logged (the status matters more)."""
        if not self.trailing_metadata:
            return None
        try:
            encode_metadata(self.trailing_metadata)
        except (TypeError, ValueError) as exc:
            log.error("dropping trailing metadata set by middleware for %s: %s", self.path, exc)
            return None
        return self.trailing_metadata

    def time_remaining(self) -> float | None:
        """Seconds until the client's deadline, or None when it set none."""
        return None if self.deadline is None else self.deadline.time_remaining()

    def expires_at(self) -> float | None:
        """The client's deadline in ``time.monotonic()`` seconds, or None when it set none."""
        return None if self.deadline is None else time.monotonic() + self.deadline.time_remaining()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def finish(self, status: str, message: str | None) -> None:
        """Record the final status and run ``on_done`` callbacks (errors there are not the client's)."""
        self.status = status
        self.status_message = message
        for callback in self.on_done:
            callback(self)


CallNext = Callable[[CallContext], Awaitable[Any]]


class Middleware(Protocol):
    """Wraps every inference call; see the module docstring."""

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any: ...


def compose(middleware: Sequence[Middleware], terminal: CallNext) -> CallNext:
    """Fold ``middleware`` (outermost first) around ``terminal`` once, at build time."""
    call = terminal
    for layer in reversed(middleware):
        call = _bind(layer, call)
    return call


def _bind(layer: Middleware, call_next: CallNext) -> CallNext:
    async def call(ctx: CallContext) -> Any:
        return await layer(ctx, call_next)

    return call
