"""The ``priority`` and ``timeout`` request parameters: the batcher's queue order and the call's deadline."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.open_inference.models import PRIORITY_GATE, RECORDER


def _tag(value: str) -> grpcclient.InferInput:
    item = grpcclient.InferInput("tag", [1], "BYTES")
    item.set_data_from_numpy(np.array([value.encode()], dtype=object))
    return item


def _call(address: str, tag: str, outcomes: dict[str, Any], **options: Any) -> threading.Thread:
    def run() -> None:
        try:
            with grpcclient.InferenceServerClient(address) as client:
                outcomes[tag] = client.infer("ordered", [_tag(tag)], **options).as_numpy("result").tolist()
        except InferenceServerException as exc:
            outcomes[tag] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_priority_orders_the_queue_one_is_highest(server):
    PRIORITY_GATE.reset()
    outcomes: dict[str, Any] = {}
    threads = [_call(server.address, "first", outcomes)]
    assert PRIORITY_GATE.entered.wait(10)  # the model is busy with "first"
    threads.append(_call(server.address, "low", outcomes, priority=201))
    RECORDER.wait_depth("ordered", 1)
    threads.append(_call(server.address, "default", outcomes))
    RECORDER.wait_depth("ordered", 2)
    threads.append(_call(server.address, "high", outcomes, priority=1))
    RECORDER.wait_depth("ordered", 3)
    PRIORITY_GATE.release.set()
    for thread in threads:
        thread.join(20)
    assert PRIORITY_GATE.calls == ["first", "high", "default", "low"]
    assert outcomes["high"] == [b"high"] and outcomes["low"] == [b"low"]


def test_timeout_bounds_a_slow_call(client):
    seconds = grpcclient.InferInput("seconds", [1], "FP64")
    seconds.set_data_from_numpy(np.array([0.6]))
    started = time.perf_counter()
    with pytest.raises(InferenceServerException) as caught:
        client.infer("sleepy", [seconds], timeout=50_000)
    assert time.perf_counter() - started < 0.5
    assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert "50000 µs" in caught.value.message()


def test_a_request_whose_timeout_passes_while_queued_never_reaches_the_model(server):
    PRIORITY_GATE.reset()
    outcomes: dict[str, Any] = {}
    first = _call(server.address, "busy", outcomes)
    assert PRIORITY_GATE.entered.wait(10)
    late = _call(server.address, "late", outcomes, timeout=100_000)
    late.join(5)
    PRIORITY_GATE.release.set()
    first.join(10)
    assert isinstance(outcomes["late"], InferenceServerException)
    assert outcomes["late"].status() == "StatusCode.DEADLINE_EXCEEDED"
    assert PRIORITY_GATE.calls == ["busy"]


def test_bad_parameters_are_invalid_argument(server):
    def infer(**parameters: Any) -> grpc.RpcError:
        request = service_pb2.ModelInferRequest(model_name="add")
        request.inputs.add(name="a", datatype="FP64", shape=[1])
        request.raw_input_contents.append(np.array([1.0]).tobytes())
        for key, (kind, value) in parameters.items():
            setattr(request.parameters[key], kind, value)
        with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as caught:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
        return caught.value

    error = infer(priority=("string_param", "high"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "'priority' must be an integer" in error.details()
    error = infer(priority=("uint64_param", 500))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "1 (highest) to 201" in error.details()
    error = infer(timeout=("int64_param", -5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "'timeout'" in error.details()
