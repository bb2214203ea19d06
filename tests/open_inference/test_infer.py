"""ModelInfer with tritonclient (sync and asyncio): every kind of tensor, both content forms, versions, batching."""

from __future__ import annotations

import asyncio
import threading

import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.open_inference.models import MATMUL_GATE, RECORDER, WEIGHTS


def tensor(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    item = grpcclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return item


def test_scalars_and_an_optional_input(client):
    result = client.infer("add", [tensor("a", np.array([0.1]), "FP64"), tensor("b", np.array([0.2]), "FP64")])
    assert result.as_numpy("result").tolist() == [0.1 + 0.2]  # float64 all the way
    assert result.get_response().model_version == "1"
    assert client.infer("add", [tensor("a", np.array([1.5]), "FP64")]).as_numpy("result").tolist() == [3.5]
    count = client.infer("count", [tensor("n", np.array([20], np.int64), "INT64"),
                                   tensor("flag", np.array([True]), "BOOL")])
    assert count.as_numpy("result").tolist() == [41]
    noted = client.infer("count", [tensor("n", np.array([1], np.int64), "INT64"),
                                   tensor("flag", np.array([False]), "BOOL"),
                                   tensor("note", np.array(["héllo".encode()], dtype=object), "BYTES")])
    assert noted.as_numpy("result").tolist() == [2 + 5]


def test_bytes_round_trip_with_empty_and_non_utf8_elements(client):
    blobs = np.array([b"", b"\xff\xfe\x00binary", b"abc"], dtype=object)
    texts = np.array(["", "ünï"], dtype=object)
    result = client.infer("echo", [tensor("texts", np.array([t.encode() for t in texts], dtype=object), "BYTES"),
                                   tensor("blobs", blobs, "BYTES")])
    out = result.as_numpy("result")
    assert out.tolist() == [b"", b"yranib\x00\xfe\xff", b"cba", b"", "ÜNÏ".encode()]
    assert result.get_output("result").shape == [5] and result.get_output("result").datatype == "BYTES"


def test_fp16_tensors(client):
    x = np.array([[1.5, -2.25, 1000.0], [0.0, 1e-3, 3.0]], dtype=np.float16)
    result = client.infer("half", [tensor("x", x, "FP16")])
    out = result.as_numpy("result")
    assert out.dtype == np.float16 and out.shape == (2, 3)
    np.testing.assert_array_equal(out, x * 2)


def test_bf16_tensors_travel_as_raw_bytes(client):
    x = np.array([[1.0, -2.5], [3.0, 0.15625]], dtype=ml_dtypes.bfloat16)
    result = client.infer("bf16-double", [tensor("x", x, "BF16")])
    output = result.get_output("result")
    assert output.datatype == "BF16" and list(output.shape) == [2, 2]
    raw = result.get_response().raw_output_contents[0]
    np.testing.assert_array_equal(np.frombuffer(raw, dtype=ml_dtypes.bfloat16).reshape(2, 2), x * 2)
    metadata = client.get_model_metadata("bf16-double", as_json=True)
    assert metadata["inputs"][0].get("datatype", "") == ""  # the model takes any datatype its decoder accepts


def test_dataclass_output_is_one_output_per_field_and_a_subset_can_be_asked_for(client):
    values = tensor("values", np.array([1.0, 2.5, 3.5]), "FP64")
    result = client.infer("summary", [values])
    assert result.as_numpy("total").tolist() == [7.0]
    assert result.as_numpy("count").tolist() == [3]
    assert result.as_numpy("label").tolist() == [b"n=3"]
    subset = client.infer("summary", [values], outputs=[grpcclient.InferRequestedOutput("label"),
                                                        grpcclient.InferRequestedOutput("total")])
    response = subset.get_response()
    assert [o.name for o in response.outputs] == ["label", "total"]
    assert len(response.raw_output_contents) == 2 and subset.as_numpy("count") is None


def test_versions(client):
    x = tensor("x", np.array([2.0]), "FP64")
    assert client.infer("scale", [x]).as_numpy("result").tolist() == [200.0]  # the default: highest
    assert client.infer("scale", [x], model_version="1").as_numpy("result").tolist() == [20.0]
    result = client.infer("scale", [x], model_version="2")
    assert result.as_numpy("result").tolist() == [200.0] and result.get_response().model_version == "2"


def test_typed_contents_are_read_as_well_as_raw_bytes(server):
    request = service_pb2.ModelInferRequest(model_name="count", id="typed-1")
    request.inputs.add(name="n", datatype="INT64", shape=[1]).contents.int64_contents.append(5)
    request.inputs.add(name="flag", datatype="BOOL", shape=[1]).contents.bool_contents.append(True)
    request.inputs.add(name="note", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"abc")
    import grpc

    with grpc.insecure_channel(server.address) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert response.id == "typed-1"
    assert not response.outputs[0].HasField("contents")  # outputs always travel raw
    assert np.frombuffer(response.raw_output_contents[0], dtype="<i8").tolist() == [5 * 2 + 1 + 3]


def test_batched_fp32_model_under_16_concurrent_callers_makes_fewer_model_calls(client, server):
    MATMUL_GATE.reset()
    rows = [np.full((1, 4), i, dtype=np.float32) for i in range(16)]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def call(index: int) -> None:
        try:
            with grpcclient.InferenceServerClient(server.address) as own:
                results[index] = own.infer("matmul", [tensor("x", rows[index], "FP32")]).as_numpy("result")
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert MATMUL_GATE.entered.wait(10)  # the model holds its first call...
    threads = [threading.Thread(target=call, args=(i,)) for i in range(1, 16)]
    for thread in threads:
        thread.start()
    RECORDER.wait_depth("matmul", 15)  # ...until the other 15 rows are queued behind it
    MATMUL_GATE.release.set()
    for thread in [first, *threads]:
        thread.join(20)
    assert not errors, errors
    for index, row in enumerate(rows):
        np.testing.assert_allclose(results[index], row @ WEIGHTS, rtol=1e-6)
    assert sum(MATMUL_GATE.calls) == 16
    assert len(MATMUL_GATE.calls) < 16 and MATMUL_GATE.calls[1:] == [15]


def test_asyncio_client_infers_and_batches(server):
    MATMUL_GATE.reset()
    MATMUL_GATE.release.set()  # nobody waits: the calls batch as they come

    async def main() -> list[np.ndarray]:
        async with aioclient.InferenceServerClient(server.address) as client:
            inputs = []
            for i in range(8):
                x = aioclient.InferInput("x", [1, 4], "FP32")
                x.set_data_from_numpy(np.full((1, 4), i, dtype=np.float32))
                inputs.append(x)
            results = await asyncio.gather(*(client.infer("matmul", [x]) for x in inputs))
            add = await client.infer("add", [_aio_tensor("a", np.array([1.0]), "FP64")])
            assert add.as_numpy("result").tolist() == [3.0]
            return [r.as_numpy("result") for r in results]

    outputs = asyncio.run(main())
    for i, out in enumerate(outputs):
        np.testing.assert_allclose(out, np.full((1, 4), i, dtype=np.float32) @ WEIGHTS, rtol=1e-6)
    assert sum(MATMUL_GATE.calls) == 8


def _aio_tensor(name: str, array: np.ndarray, datatype: str) -> aioclient.InferInput:
    item = aioclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return item


def test_a_model_error_is_internal_naming_the_model(client):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as caught:
        client.infer("fails", [tensor("x", np.array([1.0]), "FP64")])
    assert caught.value.status() == "StatusCode.INTERNAL"
    assert "'fails'" in caught.value.message() and "ValueError" in caught.value.message()
