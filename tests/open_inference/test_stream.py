"""ModelStreamInfer through tritonclient's start_stream (sync) and stream_infer (asyncio)."""

from __future__ import annotations

import asyncio
import queue
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient


def _inputs(module: Any, prompt: str, n: int) -> list[Any]:
    text = module.InferInput("prompt", [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt.encode()], dtype=object))
    count = module.InferInput("n", [1], "INT64")
    count.set_data_from_numpy(np.array([n], dtype=np.int64))
    return [text, count]


def _final(result: Any) -> bool:
    parameters = result.get_response().parameters
    return "triton_final_response" in parameters and parameters["triton_final_response"].bool_param


def test_a_streaming_model_is_decoupled_one_response_per_item_then_an_empty_final(server):
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    with grpcclient.InferenceServerClient(server.address) as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        client.async_stream_infer("tokens", _inputs(grpcclient, "tok", 3), request_id="r1",
                                  enable_empty_final_response=True)
        received = [answers.get(timeout=10) for _ in range(4)]
        client.stop_stream()
    assert all(error is None for _, error in received)
    items = [result for result, _ in received]
    assert [r.as_numpy("result").tolist() for r in items[:3]] == [[b"tok-0"], [b"tok-1"], [b"tok-2"]]
    assert [_final(r) for r in items] == [False, False, False, True]
    assert items[3].get_response().outputs == [] and items[3].get_response().id == "r1"


def test_unary_models_answer_each_request_and_errors_do_not_end_the_stream(server):
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    a = grpcclient.InferInput("a", [1], "FP64")
    a.set_data_from_numpy(np.array([1.0]))
    bad = grpcclient.InferInput("a", [2], "FP64")
    bad.set_data_from_numpy(np.array([1.0, 2.0]))
    with grpcclient.InferenceServerClient(server.address) as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        client.async_stream_infer("add", [a], request_id="one")
        first = answers.get(timeout=10)
        client.async_stream_infer("add", [bad], request_id="two")
        second = answers.get(timeout=10)
        client.async_stream_infer("add", [a], request_id="three", enable_empty_final_response=True)
        third = answers.get(timeout=10)
        client.async_stream_infer("tokens", _inputs(grpcclient, "x", 0), request_id="four")
        client.async_stream_infer("nope", [a], request_id="five")
        fifth = answers.get(timeout=10)
        client.stop_stream()
    assert first[1] is None and first[0].as_numpy("result").tolist() == [3.0]
    assert second[0] is None and "INVALID_ARGUMENT" in second[1].message() and "input 'a'" in second[1].message()
    assert third[1] is None and _final(third[0]) and third[0].get_response().id == "three"
    assert fifth[0] is None and "NOT_FOUND" in fifth[1].message()  # "four" streamed nothing and asked for no final


def test_the_timeout_parameter_ends_a_slow_stream(server):
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    n = grpcclient.InferInput("n", [1], "INT64")
    n.set_data_from_numpy(np.array([10], dtype=np.int64))
    with grpcclient.InferenceServerClient(server.address) as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        client.async_stream_infer("drip", [n], request_id="slow", timeout=400_000)
        received = [answers.get(timeout=10)]
        while received[-1][1] is None:
            received.append(answers.get(timeout=10))
        client.stop_stream()
    items = [result.as_numpy("result").tolist() for result, _ in received[:-1]]
    assert len(items) <= 3 and items == [[i] for i in range(len(items))]  # the stream stopped early
    assert "DEADLINE_EXCEEDED" in received[-1][1].message() and "400000 µs" in received[-1][1].message()


def test_the_asyncio_client_streams_too(server):
    """tritonclient's asyncio stream takes no empty-final flag: the stream ends when the requests do."""

    async def main() -> list[Any]:
        async def requests():
            yield {"model_name": "tokens", "inputs": _inputs(aioclient, "a", 2), "request_id": "s"}
            yield {"model_name": "add", "inputs": [_aio_a(2.0)], "request_id": "t"}

        async with aioclient.InferenceServerClient(server.address) as client:
            got = []
            async for result, error in client.stream_infer(requests()):
                assert error is None
                got.append(result)
            return got

    results = asyncio.run(main())
    by_id: dict[str, list[Any]] = {}
    for result in results:
        by_id.setdefault(result.get_response().id, []).append(result.as_numpy("result").tolist())
    assert by_id == {"s": [[b"a-0"], [b"a-1"]], "t": [[4.0]]}


def _aio_a(value: float) -> Any:
    item = aioclient.InferInput("a", [1], "FP64")
    item.set_data_from_numpy(np.array([value]))
    return item
