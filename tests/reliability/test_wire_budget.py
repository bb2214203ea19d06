"""The server-wide budget of request bytes being received, and what a closed connection leaves behind.

Measured before: 16 stalled streams, each announcing a big message, took the server from
56 to 625 MB of RSS; and a closed connection's handler (with its streams and buffers)
stayed referenced until ten more connections had come and gone.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import grpc

from blazerpc_core import BlazeApp
from blazerpc_core.server.wire.limits import WireStats
from blazerpc_core.testing import RunningServer, compile_stubs, start_server
from tests.reliability.wire_client import RawH2

MiB = 1024 * 1024
PATH = "/blazerpc.InferenceService/PredictSize"


def make_app() -> BlazeApp:
    app = BlazeApp()

    @app.model("size")
    def size(data: bytes) -> int:
        return len(data)

    return app


def stall(client: RawH2, declared: int, sent: int = 64 * 1024) -> int:
    """A call whose prefix announces ``declared`` bytes, of which only ``sent`` ever come."""
    stream_id = client.request(PATH)
    client.send_data(stream_id, struct.pack(">?I", False, declared) + b"\0" * sent)
    return stream_id


def wait_stats(server: RunningServer, predicate: Callable[[WireStats], bool], timeout: float = 5.0) -> WireStats:
    wire = server.server.wire
    assert wire is not None
    deadline = time.monotonic() + timeout
    while not predicate(stats := wire.stats()):
        if time.monotonic() > deadline:
            raise AssertionError(f"server never got to the expected state: {stats}")
        time.sleep(0.02)
    return stats


def test_stalled_big_messages_hit_the_inflight_budget_while_small_calls_work() -> None:
    server = start_server(make_app(), max_message_mb=8, max_inflight_mb=16, first_message_timeout=0)
    stubs = compile_stubs(server.proto_text)
    try:
        with RawH2(server.address) as attacker, grpc.insecure_channel(
            server.address, options=[("grpc.max_send_message_length", 64 * MiB)]
        ) as channel:
            stub = stubs.pb2_grpc.InferenceServiceStub(channel)
            first, second = stall(attacker, 7 * MiB), stall(attacker, 7 * MiB)
            wait_stats(server, lambda s: s.inflight_bytes == 14 * MiB)
            refused = attacker.response(stall(attacker, 7 * MiB))
            assert refused.grpc_status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert "--max-inflight-mb" in refused.grpc_message
            assert "16777216 bytes" in refused.grpc_message
            # Small calls still fit in what is left, on another connection and on the attacker's.
            assert stub.PredictSize(stubs.pb2.SizeRequest(data=b"abc"), timeout=5).result == 3
            small = attacker.unary(PATH, stubs.pb2.SizeRequest(data=b"abcd").SerializeToString())
            assert attacker.response(small).grpc_status == 0
            assert not attacker.streams[first].done and not attacker.streams[second].done
        # The attacker's connection closed: its reservations are gone, and a big call fits again.
        wait_stats(server, lambda s: s.inflight_bytes == 0 and s.connections <= 1)
        with grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 64 * MiB)]) as channel:
            stub = stubs.pb2_grpc.InferenceServiceStub(channel)
            big = stubs.pb2.SizeRequest(data=b"z" * (7 * MiB))
            assert stub.PredictSize(big, timeout=10).result == 7 * MiB
    finally:
        server.stop(grace_period=5)


def test_a_closed_connection_releases_its_handler_and_reservations_at_once() -> None:
    server = start_server(make_app(), first_message_timeout=0)
    try:
        clients = [RawH2(server.address) for _ in range(3)]
        for client in clients:
            stall(client, 2 * MiB, sent=1 * MiB - 5)
        stats = wait_stats(server, lambda s: s.inflight_bytes == 6 * MiB)
        assert (stats.connections, stats.handlers) == (3, 3)
        for client in clients:
            client.close()
        # grpclib alone sweeps its handler set only every ten new connections.
        stats = wait_stats(server, lambda s: s.connections == 0 and s.handlers == 0, timeout=2)
        assert stats.inflight_bytes == 0
    finally:
        server.stop(grace_period=5)
