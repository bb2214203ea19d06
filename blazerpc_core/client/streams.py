"""Client streams: the caller's request items, kept for a replay until a reply arrives, and sent beside the reads.

A client-streaming or bidirectional call sends its items from a task of its own while
replies are read, so a slow writer never stops replies from being read; an exception the
caller's iterator raises ends the call and reaches the caller as it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from typing import Any

#: Bytes of a client stream kept for a replay until the first reply; a longer stream is not retried.
REPLAY_LIMIT = 4 * 1024 * 1024


class SourceError(Exception):
    """Wraps what the caller's request iterator (or the encoding of one of its items) raised."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


class Requests:
    """The messages of one client stream, kept until a reply arrives so a failed attempt can be replayed."""

    def __init__(self, source: AsyncIterator[Any], build: Callable[[Any], Any]) -> None:
        self._source = source
        self._build = build
        self._kept: list[Any] | None = []
        self._kept_bytes = 0
        self._exhausted = False

    @property
    def replayable(self) -> bool:
        return self._kept is not None

    def settle(self) -> None:
        """A reply arrived: the call will not be retried, so nothing needs keeping."""
        self._kept = None

    async def messages(self) -> AsyncIterator[Any]:
        for message in list(self._kept or ()):
            yield message
        while not self._exhausted:
            try:
                item = await self._source.__anext__()
            except StopAsyncIteration:
                self._exhausted = True
                return
            except Exception as exc:
                raise SourceError(exc) from exc
            try:
                message = self._build(item)
            except (TypeError, ValueError) as exc:
                raise SourceError(exc) from exc
            if self._kept is not None:
                self._kept_bytes += message.ByteSize()
                if self._kept_bytes > REPLAY_LIMIT:
                    self._kept = None
                else:
                    self._kept.append(message)
            yield message


async def _iterate(items: Iterable[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


def as_async_iterator(value: Any) -> AsyncIterator[Any]:
    """A client stream's items: any async iterable, or any iterable except str, bytes and dicts."""
    if isinstance(value, AsyncIterable):
        return value.__aiter__()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise TypeError(f"a streamed input takes an iterable of items, not {type(value).__name__}")
    return _iterate(value)


def discard(task: asyncio.Future[None]) -> None:
    """Stop a sender that is no longer needed; its failure, if any, was accounted for by the call."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


async def send_all(stream: Any, requests: Requests) -> None:
    """Send every request message, then half-close the stream (headers were sent by the caller)."""
    async for message in requests.messages():
        await stream.send_message(message)
    await stream.end()


async def receive(stream: Any, sender: asyncio.Future[None] | None) -> Any:
    """The next reply; while ``sender`` runs, also watch it, so a failing request iterator ends the call."""
    if sender is None or (sender.done() and not sender.cancelled() and sender.exception() is None):
        return await stream.recv_message()
    pending = asyncio.ensure_future(stream.recv_message())
    try:
        await asyncio.wait((pending, sender), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        pending.cancel()
        raise
    if not pending.done():
        error = None if sender.cancelled() else sender.exception()
        if isinstance(error, SourceError):
            pending.cancel()
            raise error
        # Sending finished, or failed because the stream did: the reply (or status) says how the call ended.
        return await pending
    return pending.result()
