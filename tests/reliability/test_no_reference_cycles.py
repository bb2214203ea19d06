"""A failed call leaves no reference cycle behind: its request is freed when the call ends.

Measured before: a failing call left 55 to 67 objects of cyclic garbage (the error's
traceback keeps the frames that raised it, and a frame held the error back through a
future, a queued item or the call's context). Each cycle kept the call's request, tensors
included, until the garbage collector's next pass, so under a flood of bad requests
memory followed the collector's rhythm instead of the calls. Each case below makes a few
hundred failing calls of one kind over a real socket and lists what of the server's the
collector finds.
"""

from __future__ import annotations

import gc
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from blazerpc_core import BlazeApp, TensorInput, TensorOutput
from blazerpc_core.testing import compile_stubs, start_server, tensor_proto

CALLS = 200


def make_app() -> BlazeApp:
    app = BlazeApp()

    @app.model("raises")
    def raises(x: float) -> float:
        raise ValueError(f"the model refuses {x}")

    @app.model("araises")
    async def araises(x: float) -> float:
        raise ValueError(f"the model refuses {x}")

    @app.model("rows", max_batch_size=8)
    def rows(x: TensorInput[np.float32, "batch", 4]) -> TensorOutput[np.float32, "batch", 4]:
        if float(x[0, 0]) < 0:
            raise ValueError("a negative first value")
        return x

    @app.model("slowish")
    def slowish(x: float) -> float:
        time.sleep(0.05)
        return x

    @app.model("drip")
    def drip(n: int) -> Iterator[int]:
        yield 1
        raise ValueError("the stream breaks")

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    running = start_server(make_app(), inline_budget_us=0)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stubs(server: Any) -> Iterator[tuple[Any, Any, Any]]:
    compiled = compile_stubs(server.proto_text)
    with grpc.insecure_channel(server.address) as channel:
        yield (compiled.pb2, compiled.pb2_grpc.InferenceServiceStub(channel),
               service_pb2_grpc.GRPCInferenceServiceStub(channel))


def server_garbage(call: Callable[[], Any], expected: grpc.StatusCode) -> list[str]:
    """What of the server's the collector finds after ``CALLS`` failing calls (empty: each call freed its own).

    Only the server's frames and objects count: grpcio's client keeps cycles of its own
    around a failed stream.
    """
    for _ in range(20):  # warm: caches, first-call set-up, the model's call times
        with pytest.raises(grpc.RpcError):
            call()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(CALLS):
            with pytest.raises(grpc.RpcError) as failed:
                call()
            assert failed.value.code() is expected, failed.value.details()
        gc.collect()
        garbage = list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    found = [f"{o.f_code.co_filename.rsplit('/', 1)[-1]}:{o.f_code.co_name}" for o in garbage
             if isinstance(o, types.FrameType) and "blazerpc_core" in o.f_code.co_filename]
    found += [type(o).__qualname__ for o in garbage if type(o).__module__.startswith("blazerpc_core")]
    return found


def test_a_sync_model_that_raises(stubs: Any) -> None:
    pb2, stub, _ = stubs
    call = lambda: stub.PredictRaises(pb2.RaisesRequest(x=1.0), timeout=10)
    assert server_garbage(call, grpc.StatusCode.INTERNAL) == []


def test_an_async_model_that_raises(stubs: Any) -> None:
    pb2, stub, _ = stubs
    call = lambda: stub.PredictAraises(pb2.AraisesRequest(x=1.0), timeout=10)
    assert server_garbage(call, grpc.StatusCode.INTERNAL) == []


def test_a_batched_model_that_raises(stubs: Any) -> None:
    pb2, stub, _ = stubs
    bad = tensor_proto(pb2, -np.ones((1, 4), np.float32))
    call = lambda: stub.PredictRows(pb2.RowsRequest(x=bad), timeout=10)
    assert server_garbage(call, grpc.StatusCode.INTERNAL) == []


def test_a_request_that_cannot_be_decoded(stubs: Any) -> None:
    pb2, stub, _ = stubs
    wrong = tensor_proto(pb2, np.ones((1, 5), np.float32))
    call = lambda: stub.PredictRows(pb2.RowsRequest(x=wrong), timeout=10)
    assert server_garbage(call, grpc.StatusCode.INVALID_ARGUMENT) == []


def test_a_call_refused_for_its_deadline(stubs: Any) -> None:
    pb2, stub, _ = stubs
    for _ in range(5):  # the model's mean call time: 50 ms
        stub.PredictSlowish(pb2.SlowishRequest(x=1.0), timeout=10)
    call = lambda: stub.PredictSlowish(pb2.SlowishRequest(x=1.0), timeout=0.02)
    assert server_garbage(call, grpc.StatusCode.DEADLINE_EXCEEDED) == []


def test_a_stream_whose_model_raises(stubs: Any) -> None:
    pb2, stub, _ = stubs
    call = lambda: list(stub.PredictDrip(pb2.DripRequest(n=3), timeout=10))
    assert server_garbage(call, grpc.StatusCode.INTERNAL) == []


def test_an_open_inference_request_with_a_wrong_shape(stubs: Any) -> None:
    _, _, oip = stubs
    message = service_pb2.ModelInferRequest(model_name="rows")
    message.inputs.add(name="x", datatype="FP32", shape=[1, 5])
    message.raw_input_contents.append(np.ones((1, 5), np.float32).tobytes())
    call = lambda: oip.ModelInfer(message, timeout=10)
    assert server_garbage(call, grpc.StatusCode.INVALID_ARGUMENT) == []
