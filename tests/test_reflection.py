"""Server reflection: a client with no .proto discovers and calls models (v1alpha and v1)."""

from __future__ import annotations

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from blazerpc_core import hookimpl
from tests.apps import varied_app

EXPECTED_SERVICES = {
    "blazerpc.InferenceService",
    "blazerpc.ManagementService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "inference.GRPCInferenceService",
}


def test_v1alpha_lists_services_and_a_client_without_proto_calls_models(blazerpc_serve):
    server = blazerpc_serve(varied_app())
    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert set(database.get_services()) == EXPECTED_SERVICES
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("blazerpc.InferenceService")
        assert "PredictAdd" in [m.name for m in service.methods]

        def call(rpc: str, **fields):
            method = service.FindMethodByName(rpc)
            request_type = message_factory.GetMessageClass(method.input_type)
            response_type = message_factory.GetMessageClass(method.output_type)
            stub = channel.unary_unary(
                f"/blazerpc.InferenceService/{rpc}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_type.FromString,
            )
            return stub(request_type(**fields), timeout=5)

        assert call("PredictAdd", a=1.25, b=2.5).result == 3.75
        x = np.arange(16, dtype=np.float32).reshape(2, 8)
        reply = call("PredictClassify", x={"shape": [2, 8], "dtype": "float32", "data": x.tobytes()})
        np.testing.assert_array_equal(np.frombuffer(reply.result.data, np.float32).reshape(2, 2), x[:, :2] * 2)
        # Health and reflection descriptors are served as well.
        assert pool.FindServiceByName("grpc.health.v1.Health").FindMethodByName("Watch").server_streaming


def _v1_exchange(channel: grpc.Channel, *requests: reflection_pb2.ServerReflectionRequest):
    # v1 and v1alpha messages are identical on the wire; only the method path differs.
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return list(call(iter(requests), timeout=5))


def test_v1_serves_files_by_symbol_and_name_and_reports_unknown_symbols(blazerpc_serve):
    server = blazerpc_serve(varied_app())
    with grpc.insecure_channel(server.address) as channel:
        listed, by_symbol, by_name, unknown = _v1_exchange(
            channel,
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="blazerpc.AddRequest"),
            reflection_pb2.ServerReflectionRequest(file_by_filename="grpc/health/v1/health.proto"),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol"),
        )
    assert {s.name for s in listed.list_services_response.service} == EXPECTED_SERVICES
    file = descriptor_pb2.FileDescriptorProto.FromString(by_symbol.file_descriptor_response.file_descriptor_proto[0])
    assert file.name == "blaze_service.proto" and file.package == "blazerpc"
    health = descriptor_pb2.FileDescriptorProto.FromString(by_name.file_descriptor_response.file_descriptor_proto[0])
    assert health.package == "grpc.health.v1"
    assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


class EchoService:
    """A plugin-contributed grpclib service using generic bytes, to check it is listed."""

    def __mapping__(self):
        import grpclib.const

        async def echo(stream):
            await stream.send_message(await stream.recv_message())

        return {
            "/test.Echo/Echo": grpclib.const.Handler(
                echo, grpclib.const.Cardinality.UNARY_UNARY, _Raw, _Raw
            )
        }


class _Raw:
    """A message type that is its own bytes, for the codec."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    @classmethod
    def FromString(cls, data: bytes) -> _Raw:
        return cls(data)

    def SerializeToString(self) -> bytes:
        return self.data


class EchoPlugin:
    @hookimpl
    def blazerpc_services(self, context):
        return [EchoService()]


def test_plugin_services_are_hosted_and_listed(blazerpc_serve):
    server = blazerpc_serve(varied_app(), plugins=[EchoPlugin()])
    with grpc.insecure_channel(server.address) as channel:
        assert channel.unary_unary("/test.Echo/Echo")(b"ping", timeout=5) == b"ping"
        (listed,) = _v1_exchange(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    assert "test.Echo" in {s.name for s in listed.list_services_response.service}
