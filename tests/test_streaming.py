"""The three streaming shapes over a real socket, driven by grpcio stubs compiled from the exported proto.

Covers sync and async models, errors in the middle of a stream, bad messages in a client
stream, middleware on streaming calls, the generated proto, reflection and the CLI listing.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Iterator

import grpc
import numpy as np
import pytest
from click.testing import CliRunner

from blazerpc_core import BlazeApp, CallContext, TensorInput, hookimpl
from blazerpc_core.cli import make_cli
from blazerpc_core.testing import tensor_proto as to_proto

TIMEOUT = 30  # seconds: bounds every call so a bug fails the test instead of hanging it


def request_type(pb2, rpc: str):
    """``PredictFooBar`` → ``pb2.FooBarRequest``."""
    return getattr(pb2, rpc.removeprefix("Predict") + "Request")


def shapes_app() -> BlazeApp:
    app = BlazeApp()

    @app.model("count")
    def count(n: int) -> Iterator[str]:
        for i in range(n):
            yield f"tok{i}"

    @app.model("count-async")
    async def count_async(n: int) -> AsyncIterator[str]:
        for i in range(n):
            await asyncio.sleep(0)
            yield f"tok{i}"

    @app.model("spell", streaming=True)
    def spell(word: str) -> Iterator[str]:
        return iter(list(word))

    @app.model("spell-async", streaming=True)
    async def spell_async(word: str) -> Iterator[str]:
        return list(word)

    @app.model("total")
    def total(xs: Iterator[float]) -> float:
        return sum(xs)

    @app.model("total-async")
    async def total_async(xs: AsyncIterator[float]) -> float:
        return sum([x async for x in xs])

    @app.model("running")
    def running(xs: Iterator[float]) -> Iterator[float]:
        acc = 0.0
        for x in xs:
            acc += x
            yield acc

    @app.model("running-async")
    async def running_async(xs: AsyncIterator[float]) -> AsyncIterator[float]:
        acc = 0.0
        async for x in xs:
            acc += x
            yield acc

    @app.model("add")
    def add(a: float, b: float) -> float:
        return a + b

    return app


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """One server for the happy-path tests of this module (they do not change it)."""
    from blazerpc_core.testing import compile_stubs, start_server

    server = start_server(shapes_app())
    try:
        stubs = compile_stubs(server.proto_text, tmp_path_factory.mktemp("stubs"))
        with grpc.insecure_channel(server.address) as channel:
            yield server, stubs.pb2, stubs.pb2_grpc.InferenceServiceStub(channel)
    finally:
        server.stop(grace_period=5)


# -- server streaming ---------------------------------------------------------------------


@pytest.mark.parametrize("rpc", ["PredictCount", "PredictCountAsync"])
def test_server_streaming_yields_one_message_per_item(shapes, rpc):
    _, pb2, stub = shapes
    replies = getattr(stub, rpc)(request_type(pb2, rpc)(n=1000), timeout=TIMEOUT)
    assert [r.result for r in replies] == [f"tok{i}" for i in range(1000)]


def test_an_empty_stream_ends_ok(shapes):
    _, pb2, stub = shapes
    call = stub.PredictCount(pb2.CountRequest(n=0), timeout=TIMEOUT)
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("rpc", ["PredictSpell", "PredictSpellAsync"])
def test_streaming_true_on_a_function_that_returns_an_iterable(shapes, rpc):
    _, pb2, stub = shapes
    request = request_type(pb2, rpc)(word="abc")
    assert [r.result for r in getattr(stub, rpc)(request, timeout=TIMEOUT)] == ["a", "b", "c"]


# -- client streaming ---------------------------------------------------------------------


@pytest.mark.parametrize("rpc", ["PredictTotal", "PredictTotalAsync"])
def test_client_streaming_receives_every_message(shapes, rpc):
    _, pb2, stub = shapes
    request = request_type(pb2, rpc)
    reply = getattr(stub, rpc)((request(xs=float(i)) for i in range(100)), timeout=TIMEOUT)
    assert reply.result == sum(range(100))


@pytest.mark.parametrize("rpc", ["PredictTotal", "PredictTotalAsync"])
def test_client_streaming_with_no_messages(shapes, rpc):
    _, _, stub = shapes
    assert getattr(stub, rpc)(iter(()), timeout=TIMEOUT).result == 0


# -- bidirectional ------------------------------------------------------------------------


@pytest.mark.parametrize("rpc", ["PredictRunning", "PredictRunningAsync"])
def test_bidi_answers_each_message_before_the_next_is_sent(shapes, rpc):
    """Lockstep: the client sends the next item only after it has the answer to the last one."""
    _, pb2, stub = shapes
    request = request_type(pb2, rpc)
    outbox: queue.Queue[object] = queue.Queue()
    done = object()

    def requests():
        while (item := outbox.get(timeout=TIMEOUT)) is not done:
            yield item

    replies = getattr(stub, rpc)(requests(), timeout=TIMEOUT)
    totals = []
    for x in (1.0, 2.0, 3.0, 4.0):
        outbox.put(request(xs=x))
        totals.append(next(replies).result)
    outbox.put(done)
    assert totals == [1.0, 3.0, 6.0, 10.0]
    assert list(replies) == []
    assert replies.code() == grpc.StatusCode.OK


def test_unary_still_works_beside_streams(shapes):
    _, pb2, stub = shapes
    assert stub.PredictAdd(pb2.AddRequest(a=1, b=2), timeout=TIMEOUT).result == 3


# -- the contract: proto text and reflection ----------------------------------------------


def test_exported_proto_marks_stream_sides(shapes):
    server, _, _ = shapes
    text = server.proto_text
    assert "rpc PredictCount(CountRequest) returns (stream CountResponse)" in text
    assert "rpc PredictTotal(stream TotalRequest) returns (TotalResponse)" in text
    assert "rpc PredictRunning(stream RunningRequest) returns (stream RunningResponse)" in text
    assert "rpc PredictAdd(AddRequest) returns (AddResponse)" in text


def test_reflection_describes_and_drives_every_shape(shapes):
    """A client that knows nothing but reflection finds the stream flags and calls each shape."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from grpclib.reflection.v1 import reflection_pb2 as rpb

    server, _, _ = shapes
    with grpc.insecure_channel(server.address) as channel:
        info = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=rpb.ServerReflectionRequest.SerializeToString,
            response_deserializer=rpb.ServerReflectionResponse.FromString,
        )
        [reply] = info(iter([rpb.ServerReflectionRequest(file_containing_symbol="blazerpc.InferenceService")]),
                       timeout=TIMEOUT)
        pool = descriptor_pool.DescriptorPool()
        for raw in reply.file_descriptor_response.file_descriptor_proto:
            pool.Add(descriptor_pb2.FileDescriptorProto.FromString(raw))
        service = pool.FindServiceByName("blazerpc.InferenceService")
        flags = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
        assert flags["PredictAdd"] == (False, False)
        assert flags["PredictCount"] == (False, True)
        assert flags["PredictTotal"] == (True, False)
        assert flags["PredictRunning"] == (True, True)

        def rpc(name, kind):
            method = service.methods_by_name[name]
            request = message_factory.GetMessageClass(method.input_type)
            response = message_factory.GetMessageClass(method.output_type)
            call = getattr(channel, kind)(
                f"/blazerpc.InferenceService/{name}",
                request_serializer=request.SerializeToString, response_deserializer=response.FromString,
            )
            return request, call

        request, call = rpc("PredictCount", "unary_stream")
        assert [r.result for r in call(request(n=3), timeout=TIMEOUT)] == ["tok0", "tok1", "tok2"]
        request, call = rpc("PredictTotal", "stream_unary")
        assert call(iter([request(xs=1.5), request(xs=2.5)]), timeout=TIMEOUT).result == 4.0
        request, call = rpc("PredictRunning", "stream_stream")
        assert [r.result for r in call(iter([request(xs=1), request(xs=2)]), timeout=TIMEOUT)] == [1, 3]


def test_cli_models_lists_the_streaming_shape(tmp_path):
    app_file = tmp_path / "stream_app.py"
    app_file.write_text(
        "from collections.abc import Iterator\n"
        "from blazerpc_core import BlazeApp\n"
        "app = BlazeApp()\n"
        "@app.model('gen')\n"
        "def gen(n: int) -> Iterator[int]:\n"
        "    yield from range(n)\n"
        "@app.model('sink')\n"
        "def sink(xs: Iterator[int]) -> int:\n"
        "    return sum(xs)\n"
        "@app.model('both')\n"
        "def both(xs: Iterator[int]) -> Iterator[int]:\n"
        "    yield from xs\n"
        "@app.model('one')\n"
        "def one(x: int) -> int:\n"
        "    return x\n"
    )
    result = CliRunner().invoke(make_cli(), ["models", str(app_file)])
    assert result.exit_code == 0, result.output
    shape = {line.split()[0]: line.split()[2] for line in result.output.splitlines()[1:] if line.strip()}
    assert shape == {
        "both": "bidi-streaming", "gen": "server-streaming", "one": "unary", "sink": "client-streaming",
    }


# -- errors -------------------------------------------------------------------------------


def failing_app() -> BlazeApp:
    app = BlazeApp()

    @app.model("fail-at-three")
    def fail_at_three(n: int) -> Iterator[int]:
        for i in range(n):
            if i == 3:
                raise ValueError("the third item is cursed")
            yield i

    @app.model("fail-at-three-async")
    async def fail_at_three_async(n: int) -> AsyncIterator[int]:
        for i in range(n):
            if i == 3:
                raise ValueError("the third item is cursed")
            yield i

    @app.model("wrong-type")
    def wrong_type(n: int) -> Iterator[int]:
        yield 1
        yield "not an int"  # type: ignore[misc]

    @app.model("not-iterable", streaming=True)
    def not_iterable(n: int) -> Iterator[int]:
        return 42  # type: ignore[return-value]

    @app.model("norms")
    def norms(xs: Iterator[TensorInput[np.float32, 2, 2]]) -> float:
        return float(sum(np.linalg.norm(x) for x in xs))

    @app.model("norms-forgiving")
    async def norms_forgiving(xs: AsyncIterator[TensorInput[np.float32, 2, 2]]) -> float:
        total = 0.0
        try:
            async for x in xs:
                total += float(np.linalg.norm(x))
        except Exception:
            pass  # the server still answers INVALID_ARGUMENT: the input was bad
        return total

    @app.model("norms-bidi")
    def norms_bidi(xs: Iterator[TensorInput[np.float32, 2, 2]]) -> Iterator[float]:
        for x in xs:
            yield float(np.linalg.norm(x))

    return app


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    from blazerpc_core.testing import compile_stubs, start_server

    server = start_server(failing_app())
    try:
        stubs = compile_stubs(server.proto_text, tmp_path_factory.mktemp("stubs"))
        with grpc.insecure_channel(server.address) as channel:
            yield server.address, stubs.pb2, stubs.pb2_grpc.InferenceServiceStub(channel)
    finally:
        server.stop(grace_period=5)


@pytest.mark.parametrize("rpc", ["PredictFailAtThree", "PredictFailAtThreeAsync"])
def test_an_error_mid_stream_ends_it_with_internal_after_the_items_sent(failing, rpc):
    _, pb2, stub = failing
    request = request_type(pb2, rpc)(n=10)
    call = getattr(stub, rpc)(request, timeout=TIMEOUT)
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for reply in call:
            received.append(reply.result)
    assert received == [0, 1, 2]
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "ValueError: the third item is cursed" in info.value.details()


def test_a_yielded_value_that_does_not_fit_is_internal(failing):
    _, pb2, stub = failing
    call = stub.PredictWrongType(pb2.WrongTypeRequest(n=1), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "does not fit its declared output" in info.value.details()


def test_a_streaming_model_that_returns_no_iterator_is_internal(failing):
    _, pb2, stub = failing
    with pytest.raises(grpc.RpcError) as info:
        list(stub.PredictNotIterable(pb2.NotIterableRequest(n=1), timeout=TIMEOUT))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "must return an iterator, not int" in info.value.details()


def _tensors(pb2, bad_at: int, count: int = 5):
    for i in range(1, count + 1):
        shape = (3,) if i == bad_at else (2, 2)
        yield pb2.NormsRequest(xs=to_proto(pb2, np.ones(shape, dtype=np.float32)))


@pytest.mark.parametrize("rpc", ["PredictNorms", "PredictNormsForgiving"])
def test_a_bad_tensor_in_message_three_is_invalid_argument(failing, rpc):
    _, pb2, stub = failing
    requests = (request_type(pb2, rpc)(xs=r.xs) for r in _tensors(pb2, 3))
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, rpc)(requests, timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request message 3" in info.value.details()
    assert "xs" in info.value.details()


def test_a_bad_tensor_in_a_bidi_stream_comes_after_the_good_answers(failing):
    _, pb2, stub = failing
    requests = (pb2.NormsBidiRequest(xs=r.xs) for r in _tensors(pb2, 3))
    call = stub.PredictNormsBidi(requests, timeout=TIMEOUT)
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for reply in call:
            received.append(reply.result)
    assert received == [2.0, 2.0]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request message 3" in info.value.details()


def test_undecodable_bytes_in_a_client_stream_are_invalid_argument(failing):
    address, _, _ = failing
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_unary("/blazerpc.InferenceService/PredictNorms",
                                    request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as info:
            call(iter([b"\xff\xff\xff"]), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request message 1" in info.value.details()


# -- middleware -----------------------------------------------------------------------------


class Recorder:
    """Middleware that records what it saw of each call, and the final status via on_done."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.done: queue.Queue[tuple[str, str, int, int]] = queue.Queue()

    async def __call__(self, ctx: CallContext, call_next):
        self.seen.append(ctx.rpc)
        ctx.on_done.append(lambda c: self.done.put((c.rpc, c.status, c.messages_in, c.messages_out)))
        ctx.trailing_metadata["x-seen-by"] = "recorder"
        return await call_next(ctx)


def test_middleware_sees_streams_and_finish_reports_status_and_message_counts(blazerpc_serve, blazerpc_connect):
    recorder = Recorder()

    class Plugin:
        @hookimpl
        def blazerpc_middleware(self, settings):
            return [recorder]

    app = BlazeApp()

    @app.model("count")
    def count(n: int) -> Iterator[int]:
        yield from range(n)

    @app.model("total")
    async def total(xs: AsyncIterator[int]) -> int:
        return sum([x async for x in xs])

    @app.model("echo")
    def echo(xs: Iterator[int]) -> Iterator[int]:
        yield from xs

    @app.model("boom")
    def boom(n: int) -> Iterator[int]:
        yield 1
        raise RuntimeError("boom")

    conn = blazerpc_connect(blazerpc_serve(app, plugins=[Plugin()]))
    stub, pb2 = conn.stub, conn.pb2
    call = stub.PredictCount(pb2.CountRequest(n=4), timeout=TIMEOUT)
    assert [r.result for r in call] == [0, 1, 2, 3]
    assert ("x-seen-by", "recorder") in call.trailing_metadata()
    assert recorder.done.get(timeout=TIMEOUT) == ("PredictCount", "OK", 1, 4)

    reply = stub.PredictTotal(iter([pb2.TotalRequest(xs=i) for i in range(5)]), timeout=TIMEOUT)
    assert reply.result == 10
    assert recorder.done.get(timeout=TIMEOUT) == ("PredictTotal", "OK", 5, 1)

    replies = stub.PredictEcho(iter([pb2.EchoRequest(xs=i) for i in range(3)]), timeout=TIMEOUT)
    assert [r.result for r in replies] == [0, 1, 2]
    assert recorder.done.get(timeout=TIMEOUT) == ("PredictEcho", "OK", 3, 3)

    with pytest.raises(grpc.RpcError):
        list(stub.PredictBoom(pb2.BoomRequest(n=1), timeout=TIMEOUT))
    assert recorder.done.get(timeout=TIMEOUT) == ("PredictBoom", "INTERNAL", 1, 1)
    assert recorder.seen == ["PredictCount", "PredictTotal", "PredictEcho", "PredictBoom"]


def test_middleware_can_refuse_a_stream_before_the_model_runs(blazerpc_serve, blazerpc_connect):
    from blazerpc_core import PermissionDenied

    started = threading.Event()

    async def deny(ctx: CallContext, call_next):
        raise PermissionDenied("no streams for you")

    class Plugin:
        @hookimpl
        def blazerpc_middleware(self, settings):
            return [deny]

    app = BlazeApp()

    @app.model("count")
    def count(n: int) -> Iterator[int]:
        started.set()
        yield from range(n)

    @app.model("sink")
    def sink(xs: Iterator[int]) -> int:
        started.set()
        return sum(xs)

    conn = blazerpc_connect(blazerpc_serve(app, plugins=[Plugin()]))
    with pytest.raises(grpc.RpcError) as info:
        list(conn.stub.PredictCount(conn.pb2.CountRequest(n=3), timeout=TIMEOUT))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as info:
        conn.stub.PredictSink(iter([conn.pb2.SinkRequest(xs=1)] * 3), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert not started.is_set()


def test_an_oversize_message_in_a_client_stream_is_resource_exhausted(blazerpc_serve, blazerpc_connect):
    app = BlazeApp()

    @app.model("sizes")
    def sizes(blobs: Iterator[bytes]) -> int:
        return sum(len(b) for b in blobs)

    server = blazerpc_serve(app, max_message_mb=0.01)  # about 10 KB
    conn = blazerpc_connect(server)
    stub, pb2 = conn.stub, conn.pb2
    assert stub.PredictSizes(iter([pb2.SizesRequest(blobs=b"x" * 1000)] * 3), timeout=TIMEOUT).result == 3000
    with pytest.raises(grpc.RpcError) as info:
        stub.PredictSizes(iter([pb2.SizesRequest(blobs=b"x" * n) for n in (10, 100_000, 10)]), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "request message 2" in info.value.details()


def test_blazerpc_serve_shows_shapes_and_drains_a_stream_on_sigterm(tmp_path):
    """A real ``blazerpc serve`` process: the banner names each shape, and SIGTERM lets a stream finish."""
    import signal

    from blazerpc_core.testing import cli_stubs, serve_cli

    app_file = tmp_path / "shapes_app.py"
    app_file.write_text(
        "import time\n"
        "from collections.abc import Iterator\n"
        "from blazerpc_core import BlazeApp\n"
        "app = BlazeApp()\n"
        "@app.model('ticks')\n"
        "def ticks(n: int) -> Iterator[int]:\n"
        "    for i in range(n):\n"
        "        time.sleep(0.05)\n"
        "        yield i\n"
        "@app.model('sink')\n"
        "def sink(xs: Iterator[int]) -> int:\n"
        "    return sum(xs)\n"
        "@app.model('echo')\n"
        "def echo(xs: Iterator[int]) -> Iterator[int]:\n"
        "    yield from xs\n"
    )
    stubs = cli_stubs([str(app_file)], tmp_path)
    with serve_cli(str(app_file), "--grace-period", "20") as server:
        banner = server.output()
        for line in ("ticks v1  [server-streaming]  rpc PredictTicks", "sink v1  [client-streaming]  rpc PredictSink",
                     "echo v1  [bidi-streaming]  rpc PredictEcho"):
            assert line in banner
        with grpc.insecure_channel(server.address) as channel:
            stub = stubs.pb2_grpc.InferenceServiceStub(channel)
            call = stub.PredictTicks(stubs.pb2.TicksRequest(n=20), timeout=TIMEOUT)
            received = [next(call).result]
            server.process.send_signal(signal.SIGTERM)
            received += [reply.result for reply in call]
            assert call.code() == grpc.StatusCode.OK
        assert received == list(range(20))
        assert server.process.wait(TIMEOUT) == 0
