"""The thread/loop bridges behind sync streaming models, driven directly with real threads and a real loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from blazerpc_core.errors import Cancelled
from blazerpc_core.runtime.streams import LoopIterator, ThreadedIterator

TIMEOUT = 10


@pytest.fixture
def pool():
    with ThreadPoolExecutor(2, thread_name_prefix="test-pool") as executor:
        yield executor


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


class Source:
    """A sync generator that records how far it got, where it ran, and whether it was closed."""

    def __init__(self, n: int | None = None, *, fail_at: int | None = None, size: int = 1) -> None:
        self.n, self.fail_at, self.size = n, fail_at, size
        self.produced = 0
        self.threads: set[str] = set()
        self.closed_in: str | None = None
        self.closed = threading.Event()

    def __call__(self) -> Iterator[bytes]:
        try:
            i = 0
            while self.n is None or i < self.n:
                if i == self.fail_at:
                    raise ValueError(f"item {i} failed")
                self.threads.add(threading.current_thread().name)
                self.produced += 1
                yield b"x" * self.size
                i += 1
        finally:
            self.closed_in = threading.current_thread().name
            self.closed.set()


def test_items_arrive_in_order_and_the_generator_never_touches_the_loop_thread(pool):
    source = Source(1000)

    async def main():
        return [item async for item in ThreadedIterator(source, pool)], threading.current_thread().name

    items, loop_thread = run(main())
    assert len(items) == 1000
    assert loop_thread not in source.threads
    assert all(name.startswith("test-pool") for name in source.threads)


def test_an_unread_stream_computes_at_most_ahead_items(pool):
    source = Source()

    async def main():
        stream = ThreadedIterator(source, pool, ahead=8)
        await stream.__anext__()
        await asyncio.sleep(0.2)  # give the producer every chance to run on
        produced = source.produced
        await stream.aclose()
        return produced

    assert run(main()) <= 1 + 8


def test_large_items_are_bounded_by_bytes(pool):
    source = Source(size=64 * 1024)

    async def main():
        stream = ThreadedIterator(source, pool, ahead=1000, ahead_bytes=256 * 1024)
        await stream.__anext__()
        await asyncio.sleep(0.2)
        produced = source.produced
        await stream.aclose()
        return produced

    assert run(main()) <= 1 + 4


def test_aclose_runs_the_generator_finally_in_a_pool_thread(pool):
    source = Source()

    async def main():
        stream = ThreadedIterator(source, pool, ahead=4)
        for _ in range(3):
            await stream.__anext__()
        await stream.aclose()
        assert source.closed.is_set()  # aclose waited for it
        return source.produced

    stopped_at = run(main())
    assert source.closed_in is not None and source.closed_in.startswith("test-pool")
    assert source.produced == stopped_at


def test_aclose_before_the_first_item_never_starts_the_model(pool):
    started = threading.Event()
    gate = threading.Event()

    def blocker():
        gate.wait(TIMEOUT)  # keeps the only free thread busy so the fill task stays queued

    def make():
        started.set()
        return iter([1])

    async def main():
        pool.submit(blocker)
        pool.submit(blocker)
        stream = ThreadedIterator(make, pool)
        closing = asyncio.ensure_future(stream.aclose())
        await asyncio.sleep(0.05)
        gate.set()
        await closing

    run(main())
    assert not started.is_set()


def test_an_error_after_some_items_comes_after_them(pool):
    source = Source(10, fail_at=3)

    async def main():
        got = []
        with pytest.raises(ValueError, match="item 3 failed"):
            async for item in ThreadedIterator(source, pool):
                got.append(item)
        return got

    assert len(run(main())) == 3


def test_a_shut_down_pool_still_closes_the_generator():
    source = Source()
    pool = ThreadPoolExecutor(1)

    async def main():
        stream = ThreadedIterator(source, pool, ahead=2)
        await stream.__anext__()
        await asyncio.sleep(0.1)  # the buffer fills and the fill task returns its thread
        pool.shutdown(wait=True)
        await stream.__anext__()
        await stream.__anext__()  # the buffer is now low: the refill cannot be submitted
        await stream.aclose()

    run(main())
    assert source.closed.wait(TIMEOUT)
    assert source.closed_in == "blazerpc-stream-close"


async def _numbers(n: int, sent: list[int]) -> AsyncIterator[int]:
    for i in range(n):
        sent.append(i)
        yield i


def test_loop_iterator_feeds_a_thread_and_reads_ahead_a_bounded_amount(pool):
    sent: list[int] = []

    async def main():
        items = LoopIterator(_numbers(1000, sent), ahead=4)
        first = await asyncio.get_running_loop().run_in_executor(pool, next, items)
        await asyncio.sleep(0.2)
        ahead = len(sent) - 1
        rest = await asyncio.get_running_loop().run_in_executor(pool, list, items)
        return first, ahead, rest

    first, ahead, rest = run(main())
    assert first == 0
    assert ahead <= 4 + 1
    assert rest == list(range(1, 1000))


def test_loop_iterator_close_wakes_a_blocked_thread_with_the_reason(pool):
    async def never() -> AsyncIterator[int]:
        yield 1
        await asyncio.Event().wait()
        yield 2  # pragma: no cover

    async def main():
        items = LoopIterator(never())

        def read_all() -> list[int]:
            return list(items)

        reading = asyncio.get_running_loop().run_in_executor(pool, read_all)
        await asyncio.sleep(0.1)
        await items.aclose(Cancelled("the client cancelled the call"))
        with pytest.raises(Cancelled, match="client cancelled"):
            await reading

    run(main())


def test_loop_iterator_passes_the_source_error_after_the_good_items(pool):
    async def source() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise ValueError("message 3 is bad")

    async def main():
        items = LoopIterator(source())
        got: list[int] = []

        def read() -> None:
            for item in items:
                got.append(item)

        with pytest.raises(ValueError, match="message 3"):
            await asyncio.get_running_loop().run_in_executor(pool, read)
        return got

    assert run(main()) == [1, 2]
