"""Rapid reset (CVE-2023-44487 class): HEADERS + RST_STREAM floods end in GOAWAY ENHANCE_YOUR_CALM.

Measured before: 151,200 HEADERS+RST pairs in 10 s were never refused, calls on other
connections failed, and the server's memory grew by 0.6-0.9 GB per flood.
"""

from __future__ import annotations

import threading
import time

import grpc

from blazerpc_core import BlazeApp
from blazerpc_core.testing import compile_stubs, start_server
from tests.reliability.wire_client import CANCEL, ENHANCE_YOUR_CALM, RawH2

PATH = "/blazerpc.InferenceService/PredictDouble"
BATCH = 500
FLOOD_SECONDS = 10.0


def make_app() -> BlazeApp:
    app = BlazeApp()

    @app.model("double")
    def double(x: int) -> int:
        return 2 * x

    return app


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def flood(address: str) -> tuple[RawH2, int, float]:
    """HEADERS + RST_STREAM pairs as fast as the socket takes them, until the server answers or closes."""
    client = RawH2(address)
    started = time.monotonic()
    pairs = 0
    while not client.goaways and not client.closed and time.monotonic() - started < FLOOD_SECONDS:
        frames = []
        for _ in range(BATCH):
            stream_id = client.next_id
            frames += client.request_headers(PATH, stream_id=stream_id)
            frames.append(client.reset_frame(stream_id, CANCEL))
        try:
            client.send(*frames)
        except OSError:  # the server closed while we were still writing
            break
        pairs += BATCH
        client.pump(0.001)
    if not client.closed:
        client.wait_closed(5)
    return client, pairs, time.monotonic() - started


def test_a_reset_flood_gets_goaway_enhance_your_calm_and_bystanders_keep_working() -> None:
    server = start_server(make_app())
    stubs = compile_stubs(server.proto_text)
    stop = threading.Event()
    outcomes: list[grpc.StatusCode] = []

    def bystander() -> None:
        with grpc.insecure_channel(server.address) as channel:
            stub = stubs.pb2_grpc.InferenceServiceStub(channel)
            while not stop.is_set():
                try:
                    assert stub.PredictDouble(stubs.pb2.DoubleRequest(x=4), timeout=5).result == 8
                    outcomes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    outcomes.append(exc.code())
                time.sleep(0.005)

    thread = threading.Thread(target=bystander)
    try:
        thread.start()
        while not outcomes:
            time.sleep(0.01)
        rss_before = _rss_mb()
        for _ in range(3):  # the attacker reconnects: each connection is cut short again
            client, pairs, took = flood(server.address)
            assert client.goaways, f"no GOAWAY after {pairs} HEADERS+RST pairs in {took:.1f}s"
            assert client.goaways[-1].error_code == ENHANCE_YOUR_CALM
            assert client.closed
            assert took < 3.0, f"the flood went on for {took:.1f}s"
        grown = _rss_mb() - rss_before
        calls = len(outcomes)
        time.sleep(0.2)
        stop.set()
        thread.join(10)
        assert len(outcomes) > calls, "the bystander stopped getting answers"
        assert set(outcomes) == {grpc.StatusCode.OK}, set(outcomes)
        assert server.server.wire is not None and server.server.wire.stats().calmed_connections == 3
        assert grown < 200, f"RSS grew by {grown:.0f} MB over three floods"
    finally:
        stop.set()
        thread.join(10)
        server.stop(grace_period=5)


def test_cancelling_calls_within_the_allowance_keeps_the_connection() -> None:
    """150 cancelled calls in a burst (the allowance is twice --max-resets-per-second, 200) are fine."""
    server = start_server(make_app())
    pb2 = compile_stubs(server.proto_text).pb2
    try:
        with RawH2(server.address) as client:
            for _ in range(150):
                stream_id = client.request(PATH)
                client.reset(stream_id, CANCEL)
            stream_id = client.unary(PATH, pb2.DoubleRequest(x=5).SerializeToString())
            response = client.response(stream_id)
            assert response.grpc_status == 0
            assert pb2.DoubleResponse.FromString(response.messages()[0][1]).result == 10
            assert not client.goaways
    finally:
        server.stop(grace_period=5)


def test_resets_of_calls_whose_own_deadline_is_nearly_up_are_not_a_flood() -> None:
    """A client that gives up on its deadlines under overload resets every call it made; that is not
    an attack (a stream that lived 90% of its grpc-timeout costs the server no less than one it
    answers DEADLINE_EXCEEDED itself), so it does not spend the reset allowance. Resets of the same
    calls made at once still do (the flood test above)."""
    server = start_server(make_app(), max_resets_per_second=10)  # an allowance of 20 resets
    pb2 = compile_stubs(server.proto_text).pb2
    try:
        with RawH2(server.address) as client:
            streams = [client.request(PATH, metadata=[("grpc-timeout", "2S")]) for _ in range(60)]
            # Past 90% of the 2 s deadline by the server's clock too (it starts when the headers arrive,
            # later than the client's on a loaded machine), before the server's own answer at 2 s.
            time.sleep(1.92)
            for stream_id in streams:
                client.reset(stream_id, CANCEL)
            stream_id = client.unary(PATH, pb2.DoubleRequest(x=6).SerializeToString())
            response = client.response(stream_id)
            assert not client.goaways
            assert response.grpc_status == 0
            assert pb2.DoubleResponse.FromString(response.messages()[0][1]).result == 12
        with RawH2(server.address) as client:
            streams = [client.request(PATH, metadata=[("grpc-timeout", "2S")]) for _ in range(60)]
            # In one write: sent one by one, a reset after the 21st can meet the closed connection
            # (ECONNRESET) before the client reads the GOAWAY.
            client.send(*(client.reset_frame(stream_id, CANCEL) for stream_id in streams))
            client.wait(lambda: bool(client.goaways), "GOAWAY", 5)
            assert client.goaways[-1].error_code == ENHANCE_YOUR_CALM
    finally:
        server.stop(grace_period=5)
