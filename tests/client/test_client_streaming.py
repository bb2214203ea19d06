"""The three streaming shapes through the client: sync and async iterators, early exits, errors mid-stream."""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
from grpclib.const import Status

from blazerpc_core.client import AsyncClient, CallError, Client
from tests.client.client_apps import TIMEOUT, Calls, streaming_app


@pytest.fixture(scope="module")
def calls() -> Calls:
    return Calls()


@pytest.fixture(scope="module")
def server(calls: Calls) -> Any:
    from blazerpc_core.testing import start_server

    running = start_server(streaming_app(calls))
    yield running
    running.stop(grace_period=2)


@pytest.fixture(scope="module")
def client(server: Any) -> Any:
    with Client(server.address, timeout=TIMEOUT) as client:
        yield client


def test_models_report_the_streaming_shapes(client: Client) -> None:
    shapes = {m.name: m.shape for m in client.models()}
    assert shapes["generate"] == "server-streaming"
    assert shapes["total"] == "client-streaming"
    assert shapes["echo"] == shapes["running-mean"] == "bidi-streaming"
    assert shapes["whoami"] == "unary"
    total = next(m for m in client.models() if m.name == "total")
    assert [(f.name, f.streamed) for f in total.inputs] == [("values", True)]


@pytest.mark.parametrize("model", ["generate", "generate-async"])
def test_server_streaming(client: Client, model: str) -> None:
    assert list(client.stream(model, prompt="hi")) == ["hi-0", "hi-1", "hi-2"]
    assert list(client.stream(model, prompt="x", n=0)) == []


@pytest.mark.parametrize("model", ["total", "total-async"])
def test_client_streaming_takes_lists_generators_and_numpy(client: Client, model: str) -> None:
    assert client.call(model, values=[1.0, 2.0, 3.5]) == 6.5
    assert client.call(model, values=iter([1.0, 2.0])) == 3.0
    assert client.call(model, values=(float(i) for i in range(100))) == 4950.0
    assert client.call(model, values=np.array([0.25, 0.25])) == 0.5
    assert client.call(model, values=[]) == 0.0


def test_bidi_with_a_generator_that_waits_for_replies(client: Client) -> None:
    """A conversation: each request is written only after the previous reply was read.

    The sync client pulls the caller's iterator in a worker thread; pulled on the event
    loop, this generator would block the very loop that delivers the reply it waits for.
    """
    replies: queue.Queue[str] = queue.Queue()

    def conversation() -> Iterator[str]:
        yield "hello"
        for _ in range(3):
            yield replies.get(timeout=TIMEOUT) + "!"

    seen = []
    for reply in client.stream("echo", items=conversation()):
        seen.append(reply)
        replies.put(reply.lower())
    assert seen == ["HELLO", "HELLO!", "HELLO!!", "HELLO!!!"]


def test_bidi_tensors(client: Client) -> None:
    rows = [np.arange(3, dtype=np.float32) + i for i in range(4)]
    sums = list(client.stream("row-sums", rows=rows))
    assert [s.tolist() for s in sums] == [[3.0], [6.0], [9.0], [12.0]]


def test_leaving_a_stream_early_cancels_it_and_the_client_goes_on(client: Client) -> None:
    tokens = client.stream("generate", prompt="t", n=100_000)
    assert next(tokens) == "t-0"
    tokens.close()
    assert list(client.stream("generate", prompt="again", n=1)) == ["again-0"]


def test_error_midway_keeps_the_items_already_received_and_is_not_retried(client: Client, calls: Calls) -> None:
    before = calls["fail-midway"]
    received = []
    with pytest.raises(CallError) as info:
        for item in client.stream("fail-midway", n=3):
            received.append(item)
    assert received == [0, 1, 2]
    assert info.value.status is Status.INTERNAL and "ran out" in info.value.message
    assert calls["fail-midway"] == before + 1


def test_an_exception_from_the_request_iterator_reaches_the_caller(client: Client) -> None:
    def broken() -> Iterator[float]:
        yield 1.0
        raise KeyError("caller's own bug")

    with pytest.raises(KeyError, match="caller's own bug"):
        client.call("total", values=broken())
    with pytest.raises(TypeError, match="field 'values' \\(double\\)"):
        client.call("total", values=[1.0, "two"])
    assert client.call("total", values=[1.0]) == 1.0  # the client is fine afterwards


def test_wrong_method_for_the_shape_is_a_type_error(client: Client) -> None:
    with pytest.raises(TypeError, match="use stream"):
        client.call("generate", prompt="x")
    with pytest.raises(TypeError, match="use call"):
        list(client.stream("whoami", x=1))
    with pytest.raises(TypeError, match="iterable of items, not str"):
        client.call("total", values="123")


def test_stream_deadline_covers_the_whole_stream(server: Any) -> None:
    with Client(server.address, timeout=TIMEOUT) as client:
        started = time.monotonic()
        with pytest.raises(CallError) as info:
            for _ in client.stream("generate", prompt="slow", n=10_000, timeout=0.3):
                time.sleep(0.01)
        assert info.value.status is Status.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2.0


def test_async_client_every_shape_with_async_iterators(server: Any) -> None:
    async def numbers(n: int) -> AsyncIterator[float]:
        for i in range(n):
            await asyncio.sleep(0)
            yield float(i)

    async def main() -> None:
        async with AsyncClient(server.address, timeout=TIMEOUT) as client:
            assert [t async for t in client.stream("generate-async", prompt="a", n=2)] == ["a-0", "a-1"]
            assert await client.call("total-async", values=numbers(5)) == 10.0
            assert await client.call("total", values=[1.0, 2.0]) == 3.0
            assert [m async for m in client.stream("running-mean", xs=numbers(4))] == [0.0, 0.5, 1.0, 1.5]
            # A sync iterator works too on the async client (pulled on the loop: it must not block).
            assert [m async for m in client.stream("echo", items=iter(["a", "b"]))] == ["A", "B"]
            # Streams and unary calls interleave on one connection.
            results = await asyncio.gather(
                client.call("total-async", values=numbers(3)),
                client.call("whoami", x=1),
                client.call("total", values=iter([2.0])),
            )
            assert results == [3.0, "server", 2.0]

    asyncio.run(main())
