"""The batching-policy contract: how a model's calls are scheduled.

``blazerpc_batching_policy`` returns a :class:`BatchingPolicy`; the server asks it once
per model for a :class:`Runner`, and every request of that model goes through
``runner.submit``. Unbatched models get a :class:`DirectRunner`; batched ones a
:class:`~blazerpc_core.runtime.batcher.Batcher`, which a plugin can reuse with its own
:class:`~blazerpc_core.runtime.dispatch.DispatchRule` (see docs/batching.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from blazerpc_core.middleware import CallContext
    from blazerpc_core.runtime.events import BatchEvents
    from blazerpc_core.runtime.executor import Invoker
    from blazerpc_core.schema.builder import MethodSchema


class Runner(Protocol):
    """Runs one model's calls; owns its queue, if it has one."""

    async def submit(self, args: Sequence[Any], ctx: CallContext) -> Any:
        """The model's result for one request (raises a BlazeError to fail it)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Finish queued work; called while the server drains."""
        ...


class BatchingPolicy(Protocol):
    """Makes the runner for one model."""

    name: str

    def create_runner(self, method: MethodSchema, invoker: Invoker, events: BatchEvents) -> Runner: ...


class DirectRunner:
    """One function call per request, as soon as it arrives."""

    def __init__(self, invoker: Invoker) -> None:
        self._invoker = invoker

    async def submit(self, args: Sequence[Any], ctx: CallContext) -> Any:
        return await self._invoker(args, ctx.expires_at())

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
