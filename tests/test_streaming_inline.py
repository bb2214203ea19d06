"""Cheap sync generators are stepped on the event loop, over a real socket with grpcio stubs.

A server-streaming model whose items the pool measured as cheap is promoted like a cheap
unary model: its generator then runs on the loop, with no thread hop for the first item
(before: a one-item stream's first item came 1.2-1.6x later than a unary answer). What
must still hold, and is tried here: long streams arrive whole and in order while other
calls are served; a generator that waits (sleeps) is never promoted; one that turns slow
is sent back to the pool mid-stream without losing or repeating items; a client that
cancels still gets the generator closed (its ``finally`` runs); an error mid-stream is
the call's status; bidirectional generators, which wait for the client, never run there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from blazerpc_core import BlazeApp
from blazerpc_core.runtime.executor import PROMOTE_AFTER

TIMEOUT = 30
LOOP = "blazerpc-test-server"  # the test server's event loop thread


class Tokens:
    """A sync generator model that records the thread of every step and can turn slow or fail."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.slow_from: int | None = None
        self.closed = threading.Event()
        self.produced = 0

    def __call__(self, n: int) -> Iterator[str]:
        try:
            for i in range(n):
                self.threads.append(threading.current_thread().name)
                if self.slow_from is not None and i >= self.slow_from:
                    time.sleep(0.002)  # twice the budget
                if n == 13 and i == 7:
                    raise ValueError("no token 7 today")
                self.produced += 1
                yield f"tok{i}"
        finally:
            self.closed.set()


def serve(blazerpc_serve, blazerpc_connect, tokens: Tokens, **settings):
    app = BlazeApp()

    @app.model("tokens")
    def stream(n: int) -> Iterator[str]:
        yield from tokens(n)

    @app.model("add")
    def add(a: float, b: float) -> float:
        return a + b

    # A 1 ms budget: cheap items pass it even on a loaded machine; 2 ms sleeps never do.
    server = blazerpc_serve(app, inline_budget_us=1000, **settings)
    conn = blazerpc_connect(server)
    call = lambda n, **kw: conn.stub.PredictTokens(conn.pb2.TokensRequest(n=n), timeout=TIMEOUT, **kw)
    return conn, call


def promote(call, tokens: Tokens) -> None:
    """One-item streams until the generator runs on the loop; it must first be measured in the pool."""
    for count in range(1, 3 * PROMOTE_AFTER):
        tokens.threads.clear()
        assert [r.result for r in call(1)] == ["tok0"]
        if tokens.threads == [LOOP]:
            assert count > PROMOTE_AFTER
            tokens.threads.clear()
            return
        assert tokens.threads[0].startswith("blazerpc-model")
    pytest.fail("a cheap generator was never promoted")


def test_a_cheap_generator_is_promoted_to_the_loop_and_long_streams_arrive_whole_beside_other_calls(
    blazerpc_serve, blazerpc_connect
):
    tokens = Tokens()
    conn, call = serve(blazerpc_serve, blazerpc_connect, tokens)
    promote(call, tokens)
    assert [r.result for r in call(3)] == ["tok0", "tok1", "tok2"]
    assert set(tokens.threads) == {LOOP}

    total = 50_000
    before = tokens.produced
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.extend(r.result for r in call(total)))
    reader.start()
    during: list[int] = []
    while reader.is_alive() and len(during) < 20:
        assert conn.stub.PredictAdd(conn.pb2.AddRequest(a=1.0, b=2.0), timeout=TIMEOUT).result == 3.0
        during.append(tokens.produced)
    reader.join(TIMEOUT)
    assert received == [f"tok{i}" for i in range(total)]
    # Unary calls were answered while the stream was still being computed on the loop.
    assert any(before < produced < before + total for produced in during), during


def test_a_generator_that_waits_is_never_promoted(blazerpc_serve, blazerpc_connect):
    tokens = Tokens()
    tokens.slow_from = 0
    _, call = serve(blazerpc_serve, blazerpc_connect, tokens)
    for _ in range(PROMOTE_AFTER + 20):
        assert [r.result for r in call(1)] == ["tok0"]
    assert LOOP not in tokens.threads


def test_a_generator_that_turns_slow_moves_to_the_pool_mid_stream_without_losing_items(
    blazerpc_serve, blazerpc_connect
):
    tokens = Tokens()
    _, call = serve(blazerpc_serve, blazerpc_connect, tokens)
    promote(call, tokens)
    tokens.slow_from = 100
    assert [r.result for r in call(300)] == [f"tok{i}" for i in range(300)]
    assert tokens.threads[0] == LOOP
    assert tokens.threads[-1].startswith("blazerpc-model")  # demoted: the rest ran in the pool


def test_an_inline_generator_is_closed_when_the_client_cancels_and_its_error_is_the_status(
    blazerpc_serve, blazerpc_connect
):
    tokens = Tokens()
    _, call = serve(blazerpc_serve, blazerpc_connect, tokens)
    promote(call, tokens)
    tokens.closed.clear()
    stream = call(10_000_000)
    assert next(stream).result == "tok0"
    stream.cancel()
    assert tokens.closed.wait(TIMEOUT), "the generator's finally never ran"
    assert tokens.threads[0] == LOOP

    got = []
    with pytest.raises(grpc.RpcError) as failed:
        for reply in call(13):
            got.append(reply.result)
    assert got == [f"tok{i}" for i in range(7)]
    assert failed.value.code() == grpc.StatusCode.INTERNAL and "no token 7 today" in failed.value.details()
    assert [r.result for r in call(2)] == ["tok0", "tok1"]  # the failure harmed nothing


def test_bidirectional_generators_never_run_on_the_loop(blazerpc_serve, blazerpc_connect):
    threads: list[str] = []
    app = BlazeApp()

    @app.model("echo")
    def echo(xs: Iterator[float]) -> Iterator[float]:
        for x in xs:
            threads.append(threading.current_thread().name)
            yield x

    conn = blazerpc_connect(blazerpc_serve(app, inline_budget_us=100))
    for _ in range(PROMOTE_AFTER + 20):
        replies = conn.stub.PredictEcho(iter([conn.pb2.EchoRequest(xs=1.0)]), timeout=TIMEOUT)
        assert [r.result for r in replies] == [1.0]
    assert LOOP not in threads
