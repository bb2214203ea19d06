"""Bad requests: each is INVALID_ARGUMENT (or NOT_FOUND) naming what is wrong, never INTERNAL, and cheap to refuse."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def stub(server) -> Iterator[Any]:
    with grpc.insecure_channel(server.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def request(model: str, *inputs: tuple[str, str, list[int], bytes | None], version: str = "") -> Any:
    """A ModelInferRequest; each input is (name, datatype, shape, raw bytes or None for no raw contents)."""
    message = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for name, datatype, shape, raw in inputs:
        message.inputs.add(name=name, datatype=datatype, shape=shape)
        if raw is not None:
            message.raw_input_contents.append(raw)
    return message


def refused(stub: Any, message: Any, code: grpc.StatusCode = INVALID) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(message, timeout=10)
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details()


def f64(*values: float) -> bytes:
    return np.array(values, dtype="<f8").tobytes()


def test_wrong_datatype_names_the_input(stub):
    details = refused(stub, request("add", ("a", "FP32", [1], np.array([1], "<f4").tobytes())))
    assert "input 'a'" in details and "FP32" in details and "FP64" in details
    details = refused(stub, request("matmul", ("x", "FP64", [1, 4], f64(1, 2, 3, 4))))
    assert "input 'x'" in details and "expected FP32" in details
    details = refused(stub, request("matmul", ("x", "BYTES", [1, 4], b"\0" * 16)))
    assert "input 'x'" in details
    details = refused(stub, request("add", ("a", "FLOAT64", [1], f64(1))))
    assert "input 'a'" in details and "unknown datatype" in details


def test_wrong_shape_names_the_input(stub):
    assert "input 'a'" in refused(stub, request("add", ("a", "FP64", [2], f64(1, 2))))
    assert "input 'texts'" in refused(stub, request("echo", ("texts", "BYTES", [1, 1], struct.pack("<I", 0)),
                                                    ("blobs", "BYTES", [0], b"")))
    details = refused(stub, request("matmul", ("x", "FP32", [1, 5], b"\0" * 20)))
    assert "input 'x'" in details and "dimension 1 is 5, expected 4" in details
    assert "negative" in refused(stub, request("matmul", ("x", "FP32", [-1, 4], b"")))
    assert "rank 65" in refused(stub, request("matmul", ("x", "FP32", [1] * 65, b"\0" * 4)))


def test_wrong_byte_count_names_the_input(stub):
    details = refused(stub, request("matmul", ("x", "FP32", [2, 4], b"\0" * 12)))
    assert "input 'x'" in details and "needs 32 bytes, got 12" in details
    details = refused(stub, request("add", ("a", "FP64", [1], b"\0" * 9)))
    assert "input 'a'" in details and "got 9" in details


def test_hostile_shapes_are_refused_before_anything_is_allocated(stub):
    started = time.perf_counter()
    huge = [2**62] * 64
    assert "more than an array can address" in refused(stub, request("matmul", ("x", "FP32", [2**62, 4], b"\0" * 16)))
    assert "input 'x'" in refused(stub, request("matmul", ("x", "FP32", huge, b"\0" * 16)))
    assert "input 'texts'" in refused(stub, request("echo", ("texts", "BYTES", [2**40], b"\0" * 8),
                                                    ("blobs", "BYTES", [0], b"")))
    long_name = "n" * 100_000
    details = refused(stub, request("add", (long_name, "FP64", [1], f64(1))))
    assert len(details) < 600 and "100000 chars" in details
    assert time.perf_counter() - started < 2


def test_bad_bytes_elements(stub):
    def echo(raw: bytes, shape: list[int]) -> str:
        return refused(stub, request("echo", ("texts", "BYTES", shape, raw), ("blobs", "BYTES", [0], b"")))

    assert "ends before element 1" in echo(struct.pack("<I", 1) + b"a" + b"\0\0\0", [2])
    assert "more BYTES elements than 7 bytes" in echo(struct.pack("<I", 1) + b"a" + b"\0\0", [2])
    assert "claims 100 bytes" in echo(struct.pack("<I", 100) + b"abc", [1])
    assert "follow its last" in echo(struct.pack("<I", 1) + b"a" + b"junk", [1])
    details = echo(struct.pack("<I", 2) + b"\xff\xfe", [1])
    assert "input 'texts'" in details and "not UTF-8" in details


def test_unknown_missing_duplicate_and_doubly_given_inputs(stub):
    details = refused(stub, request("add", ("a", "FP64", [1], f64(1)), ("c", "FP64", [1], f64(1))))
    assert "unknown input 'c'" in details and "'a', 'b'" in details
    details = refused(stub, request("add", ("b", "FP64", [1], f64(1))))
    assert "missing input 'a'" in details
    details = refused(stub, request("add", ("a", "FP64", [1], f64(1)), ("a", "FP64", [1], f64(2))))
    assert "'a' is given twice" in details
    both = request("add", ("a", "FP64", [1], f64(1)))
    both.inputs[0].contents.fp64_contents.append(1.0)
    details = refused(stub, both)
    assert "input 'a'" in details and "both" in details
    mismatched = request("add", ("a", "FP64", [1], f64(1)), ("b", "FP64", [1], None))
    assert "raw_input_contents has 1 entries for 2 inputs" in refused(stub, mismatched)


def test_bad_typed_contents(stub):
    message = request("count", ("n", "INT64", [1], None), ("flag", "BOOL", [1], None))
    message.inputs[0].contents.int64_contents.extend([1, 2])
    message.inputs[1].contents.bool_contents.append(True)
    assert "input 'n'" in refused(stub, message)
    fp16 = request("half", ("x", "FP16", [1, 3], None))
    assert "no typed contents" in refused(stub, fp16)


def test_unknown_model_or_version_is_not_found_naming_it(stub):
    details = refused(stub, request("nope", ("a", "FP64", [1], f64(1))), grpc.StatusCode.NOT_FOUND)
    assert "'nope'" in details
    details = refused(stub, request("scale", ("x", "FP64", [1], f64(1)), version="9"), grpc.StatusCode.NOT_FOUND)
    assert "'scale'" in details and "'9'" in details


def test_models_without_a_tensor_form_name_the_parameter(stub):
    details = refused(stub, request("mapped", ("counts", "INT64", [1], b"\0" * 8)))
    assert "parameter 'counts'" in details and "map" in details
    details = refused(stub, request("total", ("values", "FP64", [1], f64(1))))
    assert "parameter 'values'" in details and "client stream" in details


def test_a_streaming_model_must_use_model_stream_infer(stub):
    message = request("tokens", ("prompt", "BYTES", [1], struct.pack("<I", 1) + b"a"),
                      ("n", "INT64", [1], np.array([2], "<i8").tobytes()))
    assert "ModelStreamInfer" in refused(stub, message)


def test_undecodable_request_bytes_are_invalid_argument(server):
    with grpc.insecure_channel(server.address) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as caught:
            call(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)
    assert caught.value.code() == INVALID and "could not be decoded" in caught.value.details()


def test_a_bad_request_does_not_affect_the_next(stub):
    refused(stub, request("add", ("a", "FP64", [3], f64(1))))
    response = stub.ModelInfer(request("add", ("a", "FP64", [1], f64(1)), ("b", "FP64", [1], f64(1))))
    assert np.frombuffer(response.raw_output_contents[0], "<f8").tolist() == [2.0]
