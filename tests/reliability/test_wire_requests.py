"""What the server answers from a request's headers, and how a call ends under its deadline.

Each stream is served by ``wire.requests.serve_request`` (grpclib's ``request_handler``
made leaner). Tried over a raw HTTP/2 connection: a GET, no content-type, a JSON
content-type, no ``te: trailers``, an unknown path, a malformed and a zero
``grpc-timeout``; a deadline that fires while the model runs; a client reset while it
runs; and a model that swallows its cancellation. After each, a normal call on the same
connection still works.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from hyperframe.frame import HeadersFrame

from blazerpc_core import BlazeApp
from blazerpc_core.testing import compile_stubs, start_server
from tests.reliability.wire_client import RawH2, RawStream, grpc_frame

DOUBLE = "/blazerpc.InferenceService/PredictDouble"
NAP = "/blazerpc.InferenceService/PredictNap"
STUBBORN = "/blazerpc.InferenceService/PredictStubborn"
OK, UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED = 0, 2, 4, 12


def make_app(cancelled: threading.Event) -> BlazeApp:
    app = BlazeApp()

    @app.model("double")
    def double(x: int) -> int:
        return 2 * x

    @app.model("nap")
    async def nap(x: int) -> int:
        try:
            await asyncio.sleep(x / 1000)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return x

    @app.model("stubborn")
    async def stubborn(x: int) -> int:
        try:
            await asyncio.sleep(x / 1000)
        except asyncio.CancelledError:
            return -1  # swallows its cancellation: a bug in the model, not the server's to hang on
        return x

    return app


@pytest.fixture(scope="module")
def served():  # type: ignore[no-untyped-def]
    cancelled = threading.Event()
    server = start_server(make_app(cancelled))
    yield server, compile_stubs(server.proto_text).pb2, cancelled
    server.stop(grace_period=5)


def _raw_request(client: RawH2, headers: list[tuple[str, str]]) -> RawStream:
    stream_id = client.next_id
    client.next_id += 2
    client.streams[stream_id] = RawStream()
    client.send(HeadersFrame(stream_id, data=client.encoder.encode(headers), flags=["END_HEADERS", "END_STREAM"]))
    return client.response(stream_id)


def _still_serves(client: RawH2, pb2) -> None:  # type: ignore[no-untyped-def]
    call = client.unary(DOUBLE, pb2.DoubleRequest(x=21).SerializeToString())
    response = client.response(call)
    assert response.grpc_status == OK
    assert pb2.DoubleResponse.FromString(response.messages()[0][1]).result == 42


GRPC = [(":method", "POST"), (":scheme", "http"), (":path", DOUBLE), (":authority", "t"),
        ("content-type", "application/grpc"), ("te", "trailers")]


def _with(changes: dict[str, str | None]) -> list[tuple[str, str]]:
    """The headers of a gRPC call to DOUBLE with some replaced, removed (None) or added."""
    merged = {**dict(GRPC), **changes}
    return [(name, value) for name, value in merged.items() if value is not None]


@pytest.mark.parametrize(
    ("headers", "http_status", "grpc_status", "message"),
    [
        (_with({":method": "GET"}), "405", None, ""),
        (_with({"content-type": None}), "415", UNKNOWN, "Missing content-type header"),
        (_with({"content-type": "application/json"}), "415", UNKNOWN, "Unacceptable content-type header"),
        (_with({"content-type": "application/grpc+json"}), "415", UNKNOWN, "Unacceptable content-type header"),
        (_with({"te": None}), "400", UNKNOWN, 'Required "te: trailers" header is missing'),
        (_with({":path": "/blazerpc.InferenceService/PredictNothing"}), "200", UNIMPLEMENTED, "Method not found"),
        (_with({"grpc-timeout": "soon"}), "200", UNKNOWN, "Invalid grpc-timeout header"),
    ],
    ids=["GET", "no-content-type", "json", "grpc+json", "no-te", "unknown-path", "bad-timeout"],
)
def test_a_request_that_is_not_a_call_this_server_serves_is_answered_from_its_headers(
    served, headers, http_status, grpc_status, message  # type: ignore[no-untyped-def]
) -> None:
    server, pb2, _ = served
    with RawH2(server.address) as client:
        response = _raw_request(client, headers)
        assert response.header(":status") == http_status
        assert response.grpc_status == grpc_status
        assert response.grpc_message == message
        _still_serves(client, pb2)


def test_a_deadline_already_spent_is_deadline_exceeded_without_calling_the_model(served) -> None:  # type: ignore[no-untyped-def]
    server, pb2, _ = served
    with RawH2(server.address) as client:
        call = client.unary(DOUBLE, pb2.DoubleRequest(x=1).SerializeToString(), metadata=[("grpc-timeout", "0n")])
        assert client.response(call).grpc_status == DEADLINE_EXCEEDED
        _still_serves(client, pb2)


def test_a_deadline_that_fires_while_the_model_runs_cancels_it_and_answers_deadline_exceeded(served) -> None:  # type: ignore[no-untyped-def]
    server, pb2, cancelled = served
    cancelled.clear()
    with RawH2(server.address) as client:
        call = client.unary(NAP, pb2.NapRequest(x=5000).SerializeToString(), metadata=[("grpc-timeout", "200m")])
        response = client.response(call, timeout=5)
        assert response.grpc_status == DEADLINE_EXCEEDED
        assert cancelled.wait(5)
        quick = client.unary(NAP, pb2.NapRequest(x=1).SerializeToString(), metadata=[("grpc-timeout", "5S")])
        assert client.response(quick).grpc_status == OK  # the timer of the first call is gone with it
        _still_serves(client, pb2)


def test_a_client_reset_while_the_model_runs_cancels_it(served) -> None:  # type: ignore[no-untyped-def]
    server, pb2, cancelled = served
    cancelled.clear()
    with RawH2(server.address) as client:
        call = client.unary(NAP, pb2.NapRequest(x=5000).SerializeToString())
        client.pump(0.2)
        client.reset(call)
        assert cancelled.wait(5)
        _still_serves(client, pb2)


def test_a_model_that_swallows_its_cancellation_answers_and_the_connection_carries_on(served) -> None:  # type: ignore[no-untyped-def]
    """The deadline cancels the model, which returns anyway: its answer is sent (as with grpclib,
    the cancellation failed and is logged), and nothing is left behind."""
    server, pb2, _ = served
    with RawH2(server.address) as client:
        call = client.unary(STUBBORN, pb2.StubbornRequest(x=5000).SerializeToString(),
                            metadata=[("grpc-timeout", "200m")])
        response = client.response(call, timeout=5)
        assert response.grpc_status == OK
        assert pb2.StubbornResponse.FromString(response.messages()[0][1]).result == -1
        _still_serves(client, pb2)


def test_a_connection_keeps_no_task_of_a_call_that_ended(served) -> None:  # type: ignore[no-untyped-def]
    """grpclib swept a connection's ended tasks every ten streams, a walk over all of them;
    here each leaves as its stream is released. Tried on one connection: answered calls,
    a refusal from the headers, a spent deadline, a client reset mid-call, and a reset in
    the same write as the call's headers."""
    server, pb2, cancelled = served
    wire = server.server.wire
    with RawH2(server.address) as client:
        for _ in range(12):
            _still_serves(client, pb2)
        _raw_request(client, _with({":method": "GET"}))
        spent = client.unary(DOUBLE, pb2.DoubleRequest(x=1).SerializeToString(), metadata=[("grpc-timeout", "0n")])
        assert client.response(spent).grpc_status == DEADLINE_EXCEEDED
        cancelled.clear()
        napping = client.unary(NAP, pb2.NapRequest(x=5000).SerializeToString())
        client.pump(0.2)
        client.reset(napping)
        assert cancelled.wait(5)
        stream_id = client.next_id
        body = grpc_frame(pb2.NapRequest(x=5000).SerializeToString())
        client.send(*client.request_headers(NAP), client.data_frame(stream_id, body, end_stream=True),
                    client.reset_frame(stream_id))
        _still_serves(client, pb2)
        client.wait(lambda: len(wire._handlers) == 1, "the other tests' connections to be released", 5)
        (handler,) = wire._handlers
        client.wait(lambda: not handler._tasks and not handler._cancelled, "no task left", 2)
