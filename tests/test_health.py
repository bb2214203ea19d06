"""grpc.health.v1 through grpcio-health-checking's client: Check, Watch, startup and shutdown."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blazerpc_core import hookimpl
from blazerpc_core.testing import free_port, start_server
from tests.apps import add_app

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _check(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        ).status


@pytest.mark.parametrize("service", ["", "blazerpc.InferenceService"])
def test_check_answers_serving_once_ready(blazerpc_serve, service):
    server = blazerpc_serve(add_app())
    assert _check(server.address, service) == SERVING


def test_unknown_service_is_not_found(blazerpc_serve):
    server = blazerpc_serve(add_app())
    with pytest.raises(grpc.RpcError) as info:
        _check(server.address, "no.such.Service")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_not_serving_and_unavailable_while_warming_up():
    """A startup hook that has not finished keeps health NOT_SERVING and refuses calls."""
    release = threading.Event()

    class SlowWarmup:
        @hookimpl
        async def blazerpc_startup(self, context):
            while not release.is_set():
                await asyncio.sleep(0.01)

    port = free_port()
    starter = threading.Thread(
        target=lambda: holder.append(start_server(add_app(), plugins=[SlowWarmup()], port=port))
    )
    holder: list = []
    starter.start()
    address = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
        assert _check(address, "") == NOT_SERVING
        with grpc.insecure_channel(address) as channel:
            call = channel.unary_unary("/blazerpc.InferenceService/PredictAdd")
            with pytest.raises(grpc.RpcError) as info:
                call(b"", timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        release.set()
        starter.join(30)
    server = holder[0]
    try:
        assert _check(address, "") == SERVING
    finally:
        server.stop()


def test_watch_sees_serving_then_not_serving_first_thing_at_shutdown():
    server = start_server(add_app())
    channel = grpc.insecure_channel(server.address)
    stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)
    try:
        assert next(stream).status == SERVING
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        assert next(stream).status == NOT_SERVING
        stopper.join(30)
    finally:
        stream.cancel()
        channel.close()
        server.stop()


def test_watch_of_an_unknown_service_says_service_unknown(blazerpc_serve):
    server = blazerpc_serve(add_app())
    with grpc.insecure_channel(server.address) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="nope"), timeout=10
        )
        assert next(stream).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        stream.cancel()
