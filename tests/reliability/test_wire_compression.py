"""gRPC compression: gzip requests are accepted (with a bound on what they inflate to), responses
are compressed when the client accepts gzip, and an unknown encoding is UNIMPLEMENTED.

Measured before: a grpcio client sending gzip got ``UNIMPLEMENTED: compressed request
messages are not supported``, and ``grpc-accept-encoding`` was never advertised.
"""

from __future__ import annotations

import gzip
import zlib

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blazerpc_core import BlazeApp
from blazerpc_core.testing import compile_stubs, start_server
from tests.reliability.wire_client import RawH2

ECHO = "/blazerpc.InferenceService/PredictEcho"
MiB = 1024 * 1024
RESOURCE_EXHAUSTED, UNIMPLEMENTED = 8, 12


def make_app() -> BlazeApp:
    app = BlazeApp()

    @app.model("echo")
    def echo(data: bytes) -> bytes:
        return data

    return app


def test_a_grpcio_client_sending_gzip_is_served_on_every_service() -> None:
    server = start_server(make_app())
    stubs = compile_stubs(server.proto_text)
    try:
        with grpc.insecure_channel(server.address, compression=grpc.Compression.Gzip) as channel:
            stub = stubs.pb2_grpc.InferenceServiceStub(channel)
            payload = b"tensor bytes " * 20_000
            assert stub.PredictEcho(stubs.pb2.EchoRequest(data=payload), timeout=10).result == payload
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(grace_period=5)


def bomb(inflated: int) -> bytes:
    """A gzip EchoRequest whose ``data`` field inflates to ``inflated`` zero bytes, built in pieces."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    length, varint = inflated, bytearray()
    while True:
        length, low = length >> 7, length & 0x7F
        varint.append(low | (0x80 if length else 0))
        if not length:
            break
    parts = [deflater.compress(b"\x0a" + bytes(varint))]
    zeros = bytes(MiB)
    parts += [deflater.compress(zeros) for _ in range(inflated // MiB)]
    return b"".join(parts) + deflater.flush()


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_a_gzip_bomb_is_refused_without_being_inflated() -> None:
    server = start_server(make_app(), max_message_mb=1)
    pb2 = compile_stubs(server.proto_text).pb2
    try:
        body = bomb(512 * MiB)
        assert len(body) < MiB  # within --max-message-mb as sent
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # restart the peak-RSS counter: the server runs in this process
        before = _peak_rss_mb()
        with RawH2(server.address) as client:
            stream_id = client.unary(ECHO, body, compressed=True, metadata=[("grpc-encoding", "gzip")])
            response = client.response(stream_id)
            assert response.grpc_status == RESOURCE_EXHAUSTED, response.grpc_message
            assert "inflates to more than 1048576 bytes" in response.grpc_message
            # A small gzip message on the same connection is fine.
            ok = client.unary(ECHO, gzip.compress(pb2.EchoRequest(data=b"hi").SerializeToString()),
                              compressed=True, metadata=[("grpc-encoding", "gzip")])
            assert pb2.EchoResponse.FromString(client.response(ok).messages()[0][1]).result == b"hi"
        assert _peak_rss_mb() - before < 100, "the bomb was inflated"
    finally:
        server.stop(grace_period=5)


def _call(client: RawH2, pb2: object, data: bytes, metadata: list[tuple[str, str]],
          compressed: bool = False) -> tuple[str | None, bool, bytes]:
    """(response grpc-encoding, whether the message was flagged compressed, the echoed data)."""
    body = pb2.EchoRequest(data=data).SerializeToString()  # type: ignore[attr-defined]
    if compressed:
        body = gzip.compress(body)
    response = client.response(client.unary(ECHO, body, metadata=metadata, compressed=compressed))
    assert response.grpc_status == 0, response.grpc_message
    assert response.header("grpc-accept-encoding") == "gzip"
    flag, message = response.messages()[0]
    if flag:
        message = gzip.decompress(message)
    return response.header("grpc-encoding"), flag, pb2.EchoResponse.FromString(message).result  # type: ignore[attr-defined]


def test_responses_are_compressed_when_the_client_accepts_gzip_and_the_server_compresses() -> None:
    data = b"0123456789abcdef" * 1000
    accepts = [("grpc-accept-encoding", "identity,gzip")]
    compressing = start_server(make_app(), compression="gzip")
    plain = start_server(make_app())
    try:
        pb2 = compile_stubs(plain.proto_text).pb2
        with RawH2(compressing.address) as client:
            assert _call(client, pb2, data, accepts) == ("gzip", True, data)
            assert _call(client, pb2, data, []) == (None, False, data)  # the client did not say it accepts gzip
            assert _call(client, pb2, b"tiny", accepts) == ("gzip", False, b"tiny")  # too small to bother
        with RawH2(plain.address) as client:
            assert _call(client, pb2, data, accepts) == (None, False, data)  # --compression identity
            # A client that compresses its own request gets compressed responses back.
            gz = [*accepts, ("grpc-encoding", "gzip")]
            assert _call(client, pb2, data, gz, compressed=True) == ("gzip", True, data)
        with grpc.insecure_channel(compressing.address) as channel:  # grpcio accepts gzip by default
            stub = compile_stubs(compressing.proto_text).pb2_grpc.InferenceServiceStub(channel)
            assert stub.PredictEcho(pb2.EchoRequest(data=data), timeout=5).result == data
    finally:
        compressing.stop(grace_period=5)
        plain.stop(grace_period=5)


def test_an_unknown_encoding_is_unimplemented_naming_it() -> None:
    server = start_server(make_app())
    pb2 = compile_stubs(server.proto_text).pb2
    try:
        with RawH2(server.address) as client:
            body = pb2.EchoRequest(data=b"x").SerializeToString()
            stream_id = client.unary(ECHO, body, compressed=True, metadata=[("grpc-encoding", "br")])
            response = client.response(stream_id)
            assert response.grpc_status == UNIMPLEMENTED
            assert "'br'" in response.grpc_message
            assert response.header("grpc-accept-encoding") == "gzip"
            # A message flagged compressed on a call that declared no encoding is a bad request.
            flagged = client.response(client.unary(ECHO, body, compressed=True))
            assert flagged.grpc_status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            ok = client.response(client.unary(ECHO, body))
            assert ok.grpc_status == 0
    finally:
        server.stop(grace_period=5)
