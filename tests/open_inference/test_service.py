"""The service as Triton tools see it: liveness, readiness, metadata, config, reflection, health, unsupported rpcs."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tritonclient.grpc import model_config_pb2, service_pb2
from tritonclient.utils import InferenceServerException

from blazerpc_core.defaults.open_inference.descriptors import grpc_service_file, model_config_file

SERVICE = "inference.GRPCInferenceService"


def _messages(file: descriptor_pb2.FileDescriptorProto) -> dict[str, descriptor_pb2.DescriptorProto]:
    found = {}

    def walk(messages, scope):
        for message in messages:
            name = f"{scope}.{message.name}"
            found[name] = message
            walk(message.nested_type, name)

    walk(file.message_type, file.package)
    return found


@pytest.mark.parametrize(("ours", "theirs"), [(grpc_service_file, service_pb2), (model_config_file, model_config_pb2)])
def test_descriptors_match_the_published_definitions_field_for_field(ours, theirs):
    published = descriptor_pb2.FileDescriptorProto()
    theirs.DESCRIPTOR.CopyToProto(published)
    mine = ours()
    reference = _messages(published)
    for name, message in _messages(mine).items():
        assert name in reference, name
        other = reference[name]
        fields = {f.name: f for f in other.field}

        def oneof(field, owner):
            return owner.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else None

        for field in message.field:
            want = fields[field.name]
            assert (field.number, field.type, field.label, field.type_name, oneof(field, message)) == (
                want.number, want.type, want.label, want.type_name, oneof(want, other)), f"{name}.{field.name}"
        assert message.options.map_entry == other.options.map_entry
        for enum in message.enum_type:
            (want_enum,) = [e for e in other.enum_type if e.name == enum.name]
            assert [(v.name, v.number) for v in enum.value] == [(v.name, v.number) for v in want_enum.value]
    for enum in mine.enum_type:
        (want_enum,) = [e for e in published.enum_type if e.name == enum.name]
        assert [(v.name, v.number) for v in enum.value] == [(v.name, v.number) for v in want_enum.value]
    if mine.service:
        assert [(m.name, m.input_type, m.output_type, m.client_streaming, m.server_streaming)
                for m in mine.service[0].method] == [
            (m.name, m.input_type, m.output_type, m.client_streaming, m.server_streaming)
            for m in published.service[0].method]
        assert set(_messages(mine)) == set(reference)  # every message of the service file


def test_live_ready_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("add")
    assert client.is_model_ready("scale", "1") and client.is_model_ready("scale", "2")
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "blazerpc"
    assert {"model_repository", "statistics", "binary_tensor_data"} <= set(metadata["extensions"])


def test_model_ready_of_an_unknown_model_is_not_found(client):
    with pytest.raises(InferenceServerException) as caught:
        client.is_model_ready("nope")
    assert caught.value.status() == "StatusCode.NOT_FOUND" and "'nope'" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.is_model_ready("scale", "7")
    assert caught.value.status() == "StatusCode.NOT_FOUND" and "'7'" in caught.value.message()


def test_model_metadata_lists_the_tensor_form(client):
    add = client.get_model_metadata("add", as_json=True)
    assert add["platform"] == "blazerpc" and add["versions"] == ["1"]
    assert add["inputs"] == [{"name": "a", "datatype": "FP64", "shape": ["1"]},
                             {"name": "b", "datatype": "FP64", "shape": ["1"]}]
    assert add["outputs"] == [{"name": "result", "datatype": "FP64", "shape": ["1"]}]
    count = client.get_model_metadata("count", as_json=True)
    assert [(i["name"], i["datatype"]) for i in count["inputs"]] == [
        ("n", "INT64"), ("flag", "BOOL"), ("note", "BYTES")]
    echo = client.get_model_metadata("echo", as_json=True)
    assert echo["inputs"][0] == {"name": "texts", "datatype": "BYTES", "shape": ["-1"]}
    matmul = client.get_model_metadata("matmul", as_json=True)
    assert matmul["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert matmul["outputs"] == [{"name": "result", "datatype": "FP32", "shape": ["-1", "3"]}]
    summary = client.get_model_metadata("summary", as_json=True)
    assert [(o["name"], o["datatype"]) for o in summary["outputs"]] == [
        ("total", "FP64"), ("count", "INT64"), ("label", "BYTES")]
    scale = client.get_model_metadata("scale", as_json=True)
    assert scale["versions"] == ["1", "2"]


def test_model_config_is_what_perf_tools_read(client):
    config = client.get_model_config("matmul", as_json=True)["config"]
    assert config["name"] == "matmul" and config["max_batch_size"] == 32
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": ["4"]}]
    assert config["output"] == [{"name": "result", "data_type": "TYPE_FP32", "dims": ["3"]}]
    batching = config["dynamic_batching"]
    assert batching["preferred_batch_size"] == [32] and batching["max_queue_delay_microseconds"] == "20000"
    assert batching["priority_levels"] == "201" and batching["default_priority_level"] == "101"
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    assert not config.get("model_transaction_policy", {}).get("decoupled")

    add = client.get_model_config("add", as_json=True)["config"]
    assert add.get("max_batch_size", 0) == 0 and "dynamic_batching" not in add
    assert add["input"][0]["dims"] == ["1"] and add["input"][1].get("optional") is True
    assert client.get_model_config("ordered", as_json=True)["config"]["input"][0].get("dims", []) == []
    tokens = client.get_model_config("tokens", as_json=True)["config"]
    assert tokens["model_transaction_policy"]["decoupled"] is True
    assert client.get_model_config("scale", "1", as_json=True)["config"]["version_policy"] == {
        "specific": {"versions": ["1", "2"]}}


def test_models_without_a_tensor_form_are_refused_naming_the_parameter(client):
    for model, parameter in (("mapped", "'counts'"), ("total", "'values'")):
        for call in (client.get_model_metadata, client.get_model_config):
            with pytest.raises(InferenceServerException) as caught:
                call(model)
            assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
            assert parameter in caught.value.message()


def test_unsupported_rpcs_answer_unimplemented_saying_why(client):
    calls = [
        (client.get_system_shared_memory_status, (), "shared memory"),
        (client.register_system_shared_memory, ("r", "/k", 8), "shared memory"),
        (client.unregister_system_shared_memory, (), "shared memory"),
        (client.get_cuda_shared_memory_status, (), "shared memory"),
        (client.unregister_cuda_shared_memory, (), "shared memory"),
        (client.get_trace_settings, (), "trace"),
        (client.update_trace_settings, ("add", {"trace_level": ["TIMESTAMPS"]}), "trace"),
        (client.get_log_settings, (), "log"),
        (client.update_log_settings, ({"log_info": True},), "log"),
    ]
    for call, args, why in calls:
        with pytest.raises(InferenceServerException) as caught:
            call(*args)
        assert caught.value.status() == "StatusCode.UNIMPLEMENTED", call
        assert why in caught.value.message()


def test_reflection_lists_the_service_and_health_has_its_key(server):
    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert SERVICE in database.get_services()
        file = database.FindFileContainingSymbol(f"{SERVICE}.ModelInfer")
        assert file.name == "grpc_service.proto" and "model_config.proto" in file.dependency
        check = health_pb2_grpc.HealthStub(channel).Check
        assert check(health_pb2.HealthCheckRequest(service=SERVICE)).status == health_pb2.HealthCheckResponse.SERVING


def test_the_asyncio_client_reads_the_same(server):
    async def main():
        async with aioclient.InferenceServerClient(server.address) as client:
            assert await client.is_server_live() and await client.is_server_ready()
            assert await client.is_model_ready("matmul")
            assert (await client.get_server_metadata(as_json=True))["name"] == "blazerpc"
            metadata = await client.get_model_metadata("matmul", as_json=True)
            assert metadata["inputs"][0]["shape"] == ["-1", "4"]
            config = await client.get_model_config("matmul", as_json=True)
            assert config["config"]["max_batch_size"] == 32
            statistics = await client.get_inference_statistics("add", as_json=True)
            assert statistics["model_stats"][0]["name"] == "add"
            index = await client.get_model_repository_index(as_json=True)
            assert {"name": "add", "version": "1", "state": "READY"} in index["models"]
            with pytest.raises(InferenceServerException) as caught:
                await client.get_model_metadata("nope")
            assert caught.value.status() == "StatusCode.NOT_FOUND"

    asyncio.run(main())


def test_a_second_client_of_the_sync_api_shares_nothing(server):
    with grpcclient.InferenceServerClient(server.address) as other:
        assert other.is_server_live()
