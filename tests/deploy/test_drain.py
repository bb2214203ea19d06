"""The server side of a drain that a proxy can follow, at the HTTP/2 level.

Two races a proxy without health checks (nginx) runs into when a replica stops while
calls keep coming, each of which used to fail a call:

* a connection the kernel completed but the server had not accepted yet when it closed
  its listening socket was reset, with the proxy's call already sent on it;
* a call opened on a connection after the server's first GOAWAY (which promises to serve
  it) but after the calls in flight had finished was cut when the server closed.
"""

from __future__ import annotations

import threading

from hyperframe.frame import SettingsFrame

from blazerpc_core.testing import start_server
from tests.deploy.replica_app import app
from tests.reliability.wire_client import PREFACE, RawH2, grpc_frame

MAX_STREAM_ID = 2**31 - 1
ECHO = "/blazerpc.InferenceService/PredictEcho"


def _echo(stubs, stream) -> int:
    ((_, body),) = stream.messages()
    return int(stubs.pb2.EchoResponse.FromString(body).x)


def test_a_connection_still_in_the_accept_queue_is_served_when_the_server_stops_listening(stubs):
    server = start_server(app)
    wire = server.server.wire
    assert wire is not None
    body = stubs.pb2.EchoRequest(x=7).SerializeToString()

    async def connect_then_stop_listening() -> RawH2:
        # Nothing awaits here, so the loop cannot accept: the kernel completes the connection
        # and queues it, and the call is sent, as a proxy does, before the server sees it.
        client = RawH2(server.address, handshake=False)
        client.send(PREFACE, SettingsFrame(0), *client.request_headers(ECHO),
                    client.data_frame(1, grpc_frame(body), end_stream=True))
        wire.stop_listening()
        wire.goaway(graceful=True)
        return client

    try:
        client = server.run(connect_then_stop_listening())
        with client:
            stream = client.response(1)
            assert stream.grpc_status == 0, stream.grpc_message
            assert _echo(stubs, stream) == 7
            assert client.goaways and client.goaways[0].last_stream_id == MAX_STREAM_ID
            client.wait_closed(5)
    finally:
        server.stop(grace_period=5)


def test_a_call_opened_after_the_first_goaway_is_served_though_nothing_was_in_flight(stubs):
    server = start_server(app)
    try:
        with RawH2(server.address) as client:
            client.answer_pings = False  # the final GOAWAY waits: this client has not "seen" the first
            stopping = threading.Thread(target=server.stop, kwargs={"grace_period": 10})
            stopping.start()
            client.wait(lambda: bool(client.goaways), "the first GOAWAY")
            assert client.goaways[0].last_stream_id == MAX_STREAM_ID
            stream_id = client.unary(ECHO, stubs.pb2.EchoRequest(x=11).SerializeToString())
            stream = client.response(stream_id)
            assert stream.grpc_status == 0, stream.grpc_message
            assert _echo(stubs, stream) == 11
            client.wait(lambda: len(client.goaways) == 2, "the final GOAWAY")  # after the PING timeout
            assert client.goaways[1].last_stream_id == stream_id
            client.wait_closed(5)
            stopping.join(30)
            assert not stopping.is_alive()
    finally:
        server.stop()
