"""GOAWAY for shutdown: the graceful two-step one, and the hard stop.

The graceful one lets calls already open finish and refuses streams opened after the
final GOAWAY (h2 itself would refuse to send anything more once *it* has sent GOAWAY, so
the server writes these frames itself); the connection closes when its last call ends.
"""

from __future__ import annotations

import asyncio
import threading
import time

import grpc

from blazerpc_core import BlazeApp
from blazerpc_core.server.wire.server import WireServer
from blazerpc_core.testing import RunningServer, compile_stubs, start_server
from tests.reliability.wire_client import NO_ERROR, REFUSED_STREAM, RawH2

HOLD = "/blazerpc.InferenceService/PredictHold"
MAX_STREAM_ID = 2**31 - 1


def make_app(release: threading.Event) -> BlazeApp:
    app = BlazeApp()

    @app.model("hold")
    async def hold(x: int) -> int:
        for _ in range(1000):  # at most 10 s
            if release.is_set():
                break
            await asyncio.sleep(0.01)
        return x

    return app


def wire_of(server: RunningServer) -> WireServer:
    wire = server.server.wire
    assert wire is not None
    return wire


def test_graceful_goaway_lets_open_calls_finish_and_refuses_later_streams() -> None:
    release = threading.Event()
    server = start_server(make_app(release))
    pb2 = compile_stubs(server.proto_text).pb2
    wire = wire_of(server)
    try:
        with RawH2(server.address) as client:
            client.answer_pings = False  # so this test decides when the PING is acknowledged
            first = client.unary(HOLD, pb2.HoldRequest(x=1).SerializeToString())
            client.pump(0.2)
            wire.loop.call_soon_threadsafe(wire.goaway)
            client.wait(lambda: bool(client.goaways and client.pings), "the first GOAWAY and its PING")
            assert (client.goaways[0].last_stream_id, client.goaways[0].error_code) == (MAX_STREAM_ID, NO_ERROR)
            # Sent before the client has seen the GOAWAY, as far as the server can tell: still served.
            second = client.unary(HOLD, pb2.HoldRequest(x=2).SerializeToString())
            client.pump(0.2)
            client.ack_pings()
            client.wait(lambda: len(client.goaways) == 2, "the final GOAWAY")
            assert client.goaways[1].last_stream_id == second
            late = client.unary(HOLD, pb2.HoldRequest(x=3).SerializeToString())
            assert client.response(late).reset == REFUSED_STREAM
            assert not client.streams[first].done and not client.streams[second].done
            release.set()
            for stream_id, x in ((first, 1), (second, 2)):
                response = client.response(stream_id)
                assert response.grpc_status == 0
                assert pb2.HoldResponse.FromString(response.messages()[0][1]).result == x
            assert client.wait_closed(5) < 2  # the last call is over: the connection closes
    finally:
        release.set()
        server.stop(grace_period=5)


def test_without_a_ping_ack_the_final_goaway_follows_after_a_timeout() -> None:
    release = threading.Event()
    server = start_server(make_app(release))
    wire = wire_of(server)
    try:
        with RawH2(server.address) as client:
            client.answer_pings = False
            client.pump(0.1)
            started = time.monotonic()
            wire.loop.call_soon_threadsafe(wire.goaway)
            client.wait(lambda: len(client.goaways) == 2, "the final GOAWAY", timeout=5)
            assert 0.5 < time.monotonic() - started < 3
            assert client.goaways[1].last_stream_id == 0
            assert client.wait_closed(5) < 1  # no calls were open
    finally:
        server.stop(grace_period=5)


def test_a_grpcio_call_in_flight_finishes_and_the_channel_reconnects() -> None:
    release = threading.Event()
    server = start_server(make_app(release))
    stubs = compile_stubs(server.proto_text)
    wire = wire_of(server)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = stubs.pb2_grpc.InferenceServiceStub(channel)
            future = stub.PredictHold.future(stubs.pb2.HoldRequest(x=7), timeout=10)
            deadline = time.monotonic() + 5
            while not wire.stats().connections and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)
            wire.loop.call_soon_threadsafe(wire.goaway)
            time.sleep(0.3)
            release.set()
            assert future.result().result == 7
            # The old connection goes; the channel opens a new one for the next call.
            assert stub.PredictHold(stubs.pb2.HoldRequest(x=8), timeout=10).result == 8
    finally:
        release.set()
        server.stop(grace_period=5)


def test_close_all_says_goaway_then_closes() -> None:
    release = threading.Event()
    server = start_server(make_app(release))
    pb2 = compile_stubs(server.proto_text).pb2
    wire = wire_of(server)
    try:
        with RawH2(server.address) as client:
            held = client.unary(HOLD, pb2.HoldRequest(x=1).SerializeToString())
            client.pump(0.2)
            wire.loop.call_soon_threadsafe(wire.close_all)
            client.wait_closed(5)
            assert [(g.last_stream_id, g.error_code) for g in client.goaways] == [(held, NO_ERROR)]
    finally:
        release.set()
        server.stop(grace_period=5)
