"""Removed fields stay reserved where clients look: the exported .proto (protoc compiles it) and reflection."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from blazerpc_core import BlazeApp
from blazerpc_core.testing import compile_stubs

LOCK = """\
blazerpc-schema-lock 1
package blazerpc

rpc PredictSub unary SubRequest SubResponse model sub 1

message SubRequest
  field 1 a double
  field 2 b double
  field 3 c double
  reserved 4 gone string
  reserved 7-9

message SubResponse
  field 1 result double
"""


def _app() -> BlazeApp:
    app = BlazeApp()

    @app.model("sub")
    def sub(a: float, c: float, b: float, extra: float = 1.0) -> float:  # c and b swapped, extra new
        return a - b + c * extra

    return app


def _sub_request(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.DescriptorProto:
    return next(m for m in file.message_type if m.name == "SubRequest")


def test_the_exported_proto_keeps_numbers_and_reserves_and_protoc_compiles_it(blazerpc_serve, tmp_path):
    (tmp_path / "x.lock").write_text(LOCK)
    server = blazerpc_serve(_app(), schema_lock=str(tmp_path / "x.lock"))
    text = server.proto_text
    for line in ("double a = 1;", "double c = 3;", "double b = 2;", "optional double extra = 10;",
                 "reserved 4, 7 to 9;", 'reserved "gone";'):
        assert f"  {line}\n" in text, text
    stubs = compile_stubs(text, tmp_path / "stubs")
    compiled = stubs.pb2.SubRequest.DESCRIPTOR
    assert {f.name: f.number for f in compiled.fields} == {"a": 1, "c": 3, "b": 2, "extra": 10}
    with grpc.insecure_channel(server.address) as channel:
        stub = stubs.pb2_grpc.InferenceServiceStub(channel)
        assert stub.PredictSub(stubs.pb2.SubRequest(a=10, b=3, c=2), timeout=10).result == 9


def test_a_reflection_client_sees_reserved_ranges_and_names(blazerpc_serve, tmp_path):
    (tmp_path / "x.lock").write_text(LOCK)
    server = blazerpc_serve(_app(), schema_lock=str(tmp_path / "x.lock"))
    with grpc.insecure_channel(server.address) as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="blazerpc.SubRequest")
        [answer] = list(call(iter([request]), timeout=10))
    file = descriptor_pb2.FileDescriptorProto.FromString(answer.file_descriptor_response.file_descriptor_proto[0])
    message = _sub_request(file)
    assert [(r.start, r.end) for r in message.reserved_range] == [(4, 5), (7, 10)]
    assert list(message.reserved_name) == ["gone"]
    assert {f.name: f.number for f in message.field} == {"a": 1, "c": 3, "b": 2, "extra": 10}
