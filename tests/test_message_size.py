"""``--max-message-mb``: oversize requests get RESOURCE_EXHAUSTED, judged by the length prefix."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from blazerpc_core import BlazeApp
from blazerpc_core.testing import Connection

TIMEOUT = 10
LIMIT = 1024 * 1024  # --max-message-mb 1
# A grpcio client refuses to send big messages unless told otherwise.
CLIENT_OPTIONS = [("grpc.max_send_message_length", 64 * 1024 * 1024)]


def make_app() -> BlazeApp:
    app = BlazeApp()

    @app.model("size")
    def size(data: bytes) -> int:
        return len(data)

    @app.model("total-size")
    def total_size(chunks: Iterator[bytes]) -> int:
        return sum(len(c) for c in chunks)

    return app


@pytest.fixture
def served(blazerpc_serve: Any, blazerpc_connect: Any) -> tuple[Any, Connection]:
    server = blazerpc_serve(make_app(), max_message_mb=1)
    return server, blazerpc_connect(server, options=CLIENT_OPTIONS)


def payload_for(message_size: int) -> bytes:
    """Bytes whose SizeRequest encodes to exactly ``message_size`` bytes (tag, 3-byte length, data)."""
    return b"x" * (message_size - 4)


def test_oversize_request_is_refused_and_the_channel_stays_usable(served: Any) -> None:
    _, conn = served
    stub, pb2 = conn.stub, conn.pb2
    at_limit = pb2.SizeRequest(data=payload_for(LIMIT))
    assert at_limit.ByteSize() == LIMIT
    assert stub.PredictSize(at_limit, timeout=TIMEOUT).result == LIMIT - 4
    with pytest.raises(grpc.RpcError) as info:
        stub.PredictSize(pb2.SizeRequest(data=payload_for(LIMIT + 1)), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{LIMIT + 1} bytes, over the server's limit of {LIMIT} bytes" in (info.value.details() or "")
    with pytest.raises(grpc.RpcError) as info:
        stub.PredictSize(pb2.SizeRequest(data=b"y" * (8 * LIMIT)), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The same connection carries on with normal requests.
    assert stub.PredictSize(pb2.SizeRequest(data=b"abc"), timeout=TIMEOUT).result == 3


def test_oversize_message_in_a_client_stream(served: Any) -> None:
    _, conn = served
    small = [conn.pb2.TotalSizeRequest(chunks=b"a" * 10) for _ in range(3)]
    assert conn.stub.PredictTotalSize(iter(small), timeout=TIMEOUT).result == 30
    big = [*small, conn.pb2.TotalSizeRequest(chunks=b"b" * (2 * LIMIT))]
    with pytest.raises(grpc.RpcError) as info:
        conn.stub.PredictTotalSize(iter(big), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_refused_from_the_prefix_before_any_body_arrives(served: Any) -> None:
    """A prefix announcing 1 GiB is refused at once, although the body never comes.

    A server that read the body first would wait for it until the deadline instead.
    """
    server, conn = served

    async def lying_prefix() -> GRPCError | None:
        async with Channel("127.0.0.1", server.port) as channel:
            stream = channel.request(
                "/blazerpc.InferenceService/PredictSize", Cardinality.UNARY_UNARY,
                conn.pb2.SizeRequest, conn.pb2.SizeResponse, timeout=TIMEOUT,
            )
            try:
                async with stream:
                    await stream.send_request()
                    # Hand-made frame: no client API sends a length prefix that lies.
                    await stream._stream.send_data(b"\x00" + (1 << 30).to_bytes(4, "big") + b"abc")
                    await stream.recv_initial_metadata()
            except GRPCError as exc:
                return exc
        return None

    error = asyncio.run(lying_prefix())
    assert error is not None
    assert error.status is Status.RESOURCE_EXHAUSTED
    assert "1073741824 bytes" in (error.message or "")


def test_default_limit_is_64_mib(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    conn = blazerpc_connect(blazerpc_serve(make_app()), options=CLIENT_OPTIONS)
    # 8 MiB is fine by default (grpclib itself has no limit; grpcio's default is 4 MiB).
    assert conn.stub.PredictSize(conn.pb2.SizeRequest(data=b"z" * (8 * LIMIT)), timeout=TIMEOUT).result == 8 * LIMIT
