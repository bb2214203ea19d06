"""A stream over the limit, or headers over the limit, are refused alone: the connection lives on.

Measured before: the 101st concurrent stream, or a header list over 64 KiB, made h2 raise
and grpclib dropped the TCP connection without even flushing the GOAWAY h2 had queued,
killing every legitimate call on it.
"""

from __future__ import annotations

import asyncio
import threading

from hyperframe.frame import SettingsFrame

from blazerpc_core import BlazeApp
from blazerpc_core.testing import compile_stubs, start_server
from tests.reliability.wire_client import ENHANCE_YOUR_CALM, REFUSED_STREAM, RawH2, grpc_frame

HOLD = "/blazerpc.InferenceService/PredictHold"
DOUBLE = "/blazerpc.InferenceService/PredictDouble"
RESOURCE_EXHAUSTED = 8


def make_app(release: threading.Event) -> BlazeApp:
    app = BlazeApp()

    @app.model("hold")
    async def hold(x: int) -> int:
        for _ in range(1000):  # at most 10 s
            if release.is_set():
                break
            await asyncio.sleep(0.01)
        return x

    @app.model("double")
    def double(x: int) -> int:
        return 2 * x

    return app


def test_stream_101_is_refused_while_streams_1_to_100_complete() -> None:
    release = threading.Event()
    server = start_server(make_app(release))
    pb2 = compile_stubs(server.proto_text).pb2
    try:
        with RawH2(server.address) as client:
            assert client.server_settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 100
            frames = []
            for x in range(101):  # all in one write, as a client ignoring the setting would
                stream_id = client.next_id
                frames += client.request_headers(HOLD, stream_id=stream_id)
                frames.append(client.data_frame(stream_id, grpc_frame(pb2.HoldRequest(x=x).SerializeToString()),
                                                end_stream=True))
            client.send(*frames)
            held, extra = list(range(1, 201, 2)), 201
            assert client.response(extra).reset == REFUSED_STREAM
            assert not any(client.streams[s].done for s in held)
            release.set()
            for x, stream_id in enumerate(held):
                response = client.response(stream_id)
                assert response.grpc_status == 0, response.grpc_message
                assert pb2.HoldResponse.FromString(response.messages()[0][1]).result == x
            assert not client.goaways
            again = client.unary(DOUBLE, pb2.DoubleRequest(x=4).SerializeToString())
            assert pb2.DoubleResponse.FromString(client.response(again).messages()[0][1]).result == 8
    finally:
        release.set()
        server.stop(grace_period=5)


def test_an_oversize_header_list_is_refused_per_stream_and_the_connection_lives() -> None:
    release = threading.Event()
    server = start_server(make_app(release))
    pb2 = compile_stubs(server.proto_text).pb2
    try:
        with RawH2(server.address) as client:
            assert client.server_settings[SettingsFrame.MAX_HEADER_LIST_SIZE] == 64 * 1024
            held = client.unary(HOLD, pb2.HoldRequest(x=1).SerializeToString())  # a legitimate call in flight
            # HPACK state matters: the big header empties the dynamic table on both sides and
            # "x-after" is then added to it; the next request refers to it by index only.
            big = client.unary(DOUBLE, pb2.DoubleRequest(x=1).SerializeToString(),
                               metadata=[("x-big", "a" * 70_000), ("x-after", "kept")])
            refused = client.response(big)
            assert refused.grpc_status == RESOURCE_EXHAUSTED
            assert "request headers are" in refused.grpc_message and "65536 bytes" in refused.grpc_message
            ok = client.unary(DOUBLE, pb2.DoubleRequest(x=21).SerializeToString(), metadata=[("x-after", "kept")])
            assert pb2.DoubleResponse.FromString(client.response(ok).messages()[0][1]).result == 42
            release.set()
            assert client.response(held).grpc_status == 0
            assert not client.goaways and not client.closed
    finally:
        release.set()
        server.stop(grace_period=5)


def test_past_the_hard_cap_the_connection_goes_with_its_goaway_flushed() -> None:
    """An HPACK bomb (a 4 KB header referenced 300 times: 1.2 MB decoded) ends the connection, saying why."""
    release = threading.Event()
    server = start_server(make_app(release))
    try:
        with RawH2(server.address) as client:
            client.request(DOUBLE, metadata=[("x-bomb", "b" * 4000)] * 300, end_stream=True)
            client.wait_closed(5)
            assert [g.error_code for g in client.goaways] == [ENHANCE_YOUR_CALM]
    finally:
        release.set()
        server.stop(grace_period=5)
