"""The batching-policy contract: how a model's calls are scheduled.

``blazerpc_batching_policy`` returns a :class:`BatchingPolicy`; the server asks it once
per model version for a :class:`Runner`, and every call of that model goes through it:
``submit`` for unary and client-streaming calls, ``stream`` for server and bidirectional
streams. The built-in runners are a direct runner (one call per request) and the
:class:`~blazerpc_core.runtime.batcher.Batcher`, which a plugin can reuse with its own
:class:`~blazerpc_core.runtime.dispatch.DispatchRule` (see docs/batching.md). A policy
may also wrap the :class:`ModelInvoker` it is given (the torch plugin enters
``torch.inference_mode`` around every entry into model code that way).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from blazerpc_core.call import CallContext
    from blazerpc_core.errors import DeadlineExceeded
    from blazerpc_core.method import CompiledModel
    from blazerpc_core.runtime.events import BatchEvents

#: Runs a no-argument callable as model code in the current pool thread and returns its result.
Enter = Callable[[Callable[[], Any]], Any]


class CallTimesView(Protocol):
    """A model's recent call times, to tell calls that can still finish in time."""

    @property
    def mean(self) -> float: ...

    def add(self, seconds: float) -> None: ...

    def too_late(self, deadline: float | None, now: float) -> bool: ...


class ModelInvoker(Protocol):
    """Calls one model instance's function: on the loop (async) or in the model pool (sync).

    ``await invoker(args, deadline)`` is one guarded call (concurrency cap, deadline
    checks); ``call_sync(fn, *args)`` runs model code in the current pool thread through
    ``enter``. ``wrapped(func=..., enter=...)`` is the same model with its function or
    thread entry replaced.
    """

    func: Callable[..., Any]
    is_async: bool
    pool: Executor
    label: str
    enter: Enter | None
    #: Calls (or batches) consistently cheaper than this may run on the event loop (0: never).
    inline_budget: float

    @property
    def times(self) -> CallTimesView: ...

    async def __call__(self, args: Sequence[Any], deadline: float | None = None) -> Any: ...

    def call_sync(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    def wrapped(self, *, func: Callable[..., Any] | None = None, enter: Enter | None = None) -> ModelInvoker: ...

    def late(self) -> DeadlineExceeded: ...


class Runner(Protocol):
    """Runs one model version's calls; owns its queue, if it has one."""

    async def submit(self, args: Sequence[Any], ctx: CallContext) -> Any:
        """The model's result for one request (raises a BlazeError to fail it)."""
        ...

    async def stream(self, args: Sequence[Any], ctx: CallContext) -> AsyncIterator[Any]:
        """The model's results for one server or bidirectional streaming call, as they come."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Finish or fail queued work; called while the server drains or the model is retired."""
        ...


class BatchingPolicy(Protocol):
    """Makes the runner for one model version."""

    name: str

    def create_runner(self, model: CompiledModel, invoker: ModelInvoker, events: BatchEvents) -> Runner: ...
