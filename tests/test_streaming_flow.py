"""Streams under pressure: cancellation, deadlines, slow consumers, concurrency, draining.

Every check observes the model side (a counter of produced items, a ``finally`` block that
sets a ``threading.Event``) and waits with bounded timeouts; nothing asserts on speed.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import pytest

from blazerpc_core import BlazeApp, CallContext, hookimpl
from blazerpc_core.runtime.streams import DEFAULT_AHEAD_BYTES, DEFAULT_READ_AHEAD

TIMEOUT = 30
ITEM = 64 * 1024  # large items fill HTTP/2 windows after a few dozen messages


class Counter:
    """A thread-safe count, read by the test while the model bumps it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def bump(self) -> None:
        with self._lock:
            self.value += 1


def request_type(pb2, rpc: str):
    """``PredictFooBar`` → ``pb2.FooBarRequest``."""
    return getattr(pb2, rpc.removeprefix("Predict") + "Request")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def wait_stable(read: Callable[[], int], *, quiet: float = 0.5, timeout: float = 20.0) -> int:
    """Wait until ``read()`` has not changed for ``quiet`` seconds; return its value."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"value kept changing for {timeout}s (last {last})")


class Statuses:
    """Middleware plugin recording each call's final status."""

    def __init__(self) -> None:
        self.done: queue.Queue[tuple[str, str]] = queue.Queue()

    @hookimpl
    def blazerpc_middleware(self, settings):
        async def record(ctx: CallContext, call_next):
            ctx.on_done.append(lambda c: self.done.put((c.rpc, c.status)))
            return await call_next(ctx)

        return [record]


class Probe:
    """What a model reports: items produced, whether its finally ran, what it was told."""

    def __init__(self) -> None:
        self.produced = Counter()
        self.closed = threading.Event()
        self.reason: list[BaseException] = []


def serve(blazerpc_serve, blazerpc_connect, app: BlazeApp, **settings):
    statuses = Statuses()
    server = blazerpc_serve(app, plugins=[statuses], **settings)
    return server, blazerpc_connect(server), statuses


# -- cancellation and deadlines -------------------------------------------------------------


def endless_app(probe: Probe, *, pause: float = 0.002, size: int = 8) -> BlazeApp:
    app = BlazeApp()

    @app.model("endless")
    def endless(n: int) -> Iterator[bytes]:
        try:
            while True:
                time.sleep(pause)
                probe.produced.bump()
                yield b"x" * size
        finally:
            probe.closed.set()

    @app.model("endless-async")
    async def endless_async(n: int) -> AsyncIterator[bytes]:
        try:
            while True:
                await asyncio.sleep(pause)
                probe.produced.bump()
                yield b"x" * size
        finally:
            probe.closed.set()

    return app


@pytest.mark.parametrize("rpc", ["PredictEndless", "PredictEndlessAsync"])
def test_client_cancel_closes_the_generator_and_production_stops(blazerpc_serve, blazerpc_connect, rpc):
    probe = Probe()
    server, conn, statuses = serve(blazerpc_serve, blazerpc_connect, endless_app(probe))
    request = request_type(conn.pb2, rpc)(n=0)
    call = getattr(conn.stub, rpc)(request, timeout=TIMEOUT)
    for _ in range(5):
        next(call)
    call.cancel()
    assert probe.closed.wait(10), "the model's finally block did not run"
    assert statuses.done.get(timeout=10) == (rpc, "CANCELLED")
    stopped_at = probe.produced.value
    time.sleep(0.2)
    assert probe.produced.value == stopped_at
    assert wait_until(lambda: server.server.gate.inflight == 0)


@pytest.mark.parametrize("rpc", ["PredictEndless", "PredictEndlessAsync"])
def test_deadline_mid_stream_closes_the_generator(blazerpc_serve, blazerpc_connect, rpc):
    probe = Probe()
    _, conn, statuses = serve(blazerpc_serve, blazerpc_connect, endless_app(probe, pause=0.02))
    received = 0
    request = request_type(conn.pb2, rpc)(n=0)
    with pytest.raises(grpc.RpcError) as info:
        for _ in getattr(conn.stub, rpc)(request, timeout=0.5):
            received += 1
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert received > 0, "the deadline should pass mid-stream, after some items"
    assert probe.closed.wait(10)
    assert statuses.done.get(timeout=10) == (rpc, "DEADLINE_EXCEEDED")
    stopped_at = probe.produced.value
    time.sleep(0.2)
    assert probe.produced.value == stopped_at


def blocked_readers_app(probe: Probe) -> BlazeApp:
    """Sync models that block in the middle of reading their request stream."""
    app = BlazeApp()

    @app.model("sink")
    def sink(xs: Iterator[int]) -> int:
        try:
            for _ in xs:
                probe.produced.bump()
            return 0
        except BaseException as exc:
            probe.reason.append(exc)
            raise
        finally:
            probe.closed.set()

    @app.model("echo")
    def echo(xs: Iterator[int]) -> Iterator[int]:
        try:
            for x in xs:
                probe.produced.bump()
                yield x
        except BaseException as exc:
            probe.reason.append(exc)
            raise
        finally:
            probe.closed.set()

    return app


@pytest.mark.parametrize("rpc", ["PredictSink", "PredictEcho"])
def test_cancel_wakes_a_sync_model_blocked_on_its_request_stream(blazerpc_serve, blazerpc_connect, rpc):
    from blazerpc_core import Cancelled

    probe = Probe()
    _, conn, statuses = serve(blazerpc_serve, blazerpc_connect, blocked_readers_app(probe))
    release = threading.Event()
    request = request_type(conn.pb2, rpc)

    def requests():
        yield request(xs=1)
        yield request(xs=2)
        release.wait(TIMEOUT)  # keep the stream open without sending more

    try:
        method = getattr(conn.stub, rpc)
        call = method.future(requests(), timeout=TIMEOUT) if rpc == "PredictSink" else method(
            requests(), timeout=TIMEOUT)
        assert wait_until(lambda: probe.produced.value == 2)
        call.cancel()
        assert probe.closed.wait(10), "the model thread stayed blocked on its request stream"
    finally:
        release.set()
    assert isinstance(probe.reason[0], Cancelled)
    assert statuses.done.get(timeout=10) == (rpc, "CANCELLED")


# -- flow control ---------------------------------------------------------------------------


def test_a_slow_reader_bounds_what_the_server_computes_ahead(blazerpc_serve, blazerpc_connect):
    """produced - consumed stays below HTTP/2 windows + the ``ahead`` buffer, for 64 KiB items."""
    probe = Probe()
    server, conn, _ = serve(blazerpc_serve, blazerpc_connect, endless_app(probe, pause=0, size=ITEM))
    # A fixed 256 KiB client window (no BDP growth) keeps what HTTP/2 lets through small, so
    # the bound is tight: the server's 1 MiB buffer (16 items), then that window, socket
    # buffers and the item being sent, with room to spare.
    options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 256 * 1024)]
    bound = DEFAULT_AHEAD_BYTES // ITEM + 16
    consumed = 0
    with grpc.insecure_channel(server.address, options=options) as channel:
        stub = conn.stubs.pb2_grpc.InferenceServiceStub(channel)
        call = stub.PredictEndless(conn.pb2.EndlessRequest(n=0), timeout=TIMEOUT)
        for _ in range(20):
            assert len(next(call).result) == ITEM
            consumed += 1
            time.sleep(0.02)
            assert probe.produced.value - consumed <= bound
        stalled_at = wait_stable(lambda: probe.produced.value)
        print(f"slow reader: produced {stalled_at} for {consumed} read (bound {bound})")
        assert stalled_at - consumed <= bound
        for _ in range(50):
            next(call)
            consumed += 1
        assert wait_stable(lambda: probe.produced.value) - consumed <= bound
        call.cancel()
    assert probe.closed.wait(10)


def test_a_slow_client_streaming_model_holds_the_sender_back(blazerpc_serve, blazerpc_connect):
    """The server reads at most ``ahead`` messages past the model, plus its HTTP/2 window."""
    release = threading.Event()
    consumed = Counter()
    app = BlazeApp()

    @app.model("slow-sink")
    def slow_sink(xs: Iterator[bytes]) -> int:
        for _ in xs:
            consumed.bump()
            if consumed.value == 3:
                release.wait(TIMEOUT)
        return consumed.value

    _, conn, _ = serve(blazerpc_serve, blazerpc_connect, app)
    sent = Counter()

    def requests():
        while not release.is_set():
            sent.bump()
            yield conn.pb2.SlowSinkRequest(xs=b"y" * ITEM)

    bound = (4 * 1024 * 1024) // ITEM + DEFAULT_READ_AHEAD + 8  # grpclib's stream window + read-ahead
    try:
        call = conn.stub.PredictSlowSink.future(requests(), timeout=TIMEOUT)
        assert wait_until(lambda: consumed.value == 3)
        stalled_at = wait_stable(lambda: sent.value)
        print(f"slow model: client sent {stalled_at} for {consumed.value} consumed (bound {bound})")
        assert stalled_at - consumed.value <= bound
        release.set()
        assert call.result(timeout=TIMEOUT).result == sent.value
    finally:
        release.set()


# -- concurrency and shutdown ---------------------------------------------------------------


def test_unary_calls_keep_succeeding_while_eight_streams_run(blazerpc_serve, blazerpc_connect):
    """Eight sync-generator streams on a four-thread pool must not starve sync unary models."""
    probe = Probe()
    app = endless_app(probe, pause=0.001, size=ITEM)

    @app.model("add")
    def add(a: float, b: float) -> float:
        return a + b

    _, conn, _ = serve(blazerpc_serve, blazerpc_connect, app, max_workers=4)
    stop = threading.Event()
    counts = [0] * 8
    errors: list[BaseException] = []

    def reader(index: int) -> None:
        call = conn.stub.PredictEndless(conn.pb2.EndlessRequest(n=0), timeout=TIMEOUT)
        try:
            for _ in call:
                counts[index] += 1
                if stop.is_set():
                    break
                if index % 2:
                    time.sleep(0.01)  # half the readers are slow
        except grpc.RpcError as exc:
            errors.append(exc)
        finally:
            call.cancel()

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: all(counts), timeout=TIMEOUT), counts
        before = list(counts)
        for i in range(20):
            assert conn.stub.PredictAdd(conn.pb2.AddRequest(a=i, b=1), timeout=10).result == i + 1
        assert wait_until(lambda: all(c > b for c, b in zip(counts, before, strict=True)), timeout=TIMEOUT)
    finally:
        stop.set()
        for thread in threads:
            thread.join(TIMEOUT)
    assert not errors
    assert probe.closed.wait(10)


def test_a_stream_in_flight_at_shutdown_finishes_within_the_grace_period(blazerpc_serve, blazerpc_connect):
    app = BlazeApp()

    @app.model("ten")
    def ten(n: int) -> Iterator[int]:
        for i in range(10):
            time.sleep(0.05)
            yield i

    server, conn, _ = serve(blazerpc_serve, blazerpc_connect, app)
    call = conn.stub.PredictTen(conn.pb2.TenRequest(n=0), timeout=TIMEOUT)
    received = [next(call).result]
    stopper = threading.Thread(target=server.stop, kwargs={"grace_period": 20})
    stopper.start()
    assert wait_until(lambda: not server.server.gate.open)
    with pytest.raises(grpc.RpcError) as info:
        conn.stub.PredictTen(conn.pb2.TenRequest(n=0), timeout=TIMEOUT).next()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    received += [r.result for r in call]
    assert call.code() == grpc.StatusCode.OK
    stopper.join(TIMEOUT)
    assert received == list(range(10))


def test_a_stream_outliving_the_grace_period_is_cancelled_and_closed(blazerpc_serve, blazerpc_connect):
    probe = Probe()
    server, conn, statuses = serve(blazerpc_serve, blazerpc_connect, endless_app(probe, pause=0.01))
    call = conn.stub.PredictEndless(conn.pb2.EndlessRequest(n=0), timeout=TIMEOUT)
    next(call)
    server.stop(grace_period=0.3)
    with pytest.raises(grpc.RpcError):
        for _ in call:
            pass
    assert probe.closed.is_set()
    assert statuses.done.get(timeout=10) == ("PredictEndless", "CANCELLED")
