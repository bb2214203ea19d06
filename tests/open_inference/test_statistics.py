"""ModelStatistics after known traffic: rows counted as inferences, model calls as executions (as in Triton)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from blazerpc_core.client import Client
from tests.open_inference.models import RECORDER, STATS_GATE


def _values(*values: float) -> list[grpcclient.InferInput]:
    item = grpcclient.InferInput("x", [len(values)], "FP64")
    item.set_data_from_numpy(np.array(values, dtype=np.float64))
    return [item]


def _stats(client, name: str) -> dict:
    (stats,) = client.get_inference_statistics(name, as_json=True)["model_stats"]
    return stats


def _count(duration: dict) -> int:
    return int(duration.get("count", 0))


def test_a_batched_model_counts_rows_as_inferences_and_batches_as_executions(client, server):
    STATS_GATE.reset()
    STATS_GATE.release.set()
    for rows in ((1.0,), (1.0, 2.0), (1.0, 2.0, 3.0, 4.0)):  # one at a time: one batch each
        assert client.infer("counted", _values(*rows)).as_numpy("result").tolist() == [v + 1 for v in rows]
    STATS_GATE.reset()
    threads = [threading.Thread(target=lambda: client.infer("counted", _values(5.0)))]
    threads[0].start()
    assert STATS_GATE.entered.wait(10)  # the first of 8 one-row calls holds the model...
    for _ in range(7):
        threads.append(threading.Thread(target=lambda: client.infer("counted", _values(5.0))))
        threads[-1].start()
    RECORDER.wait_depth("counted", 7)  # ...while the other 7 queue, to be one batch
    STATS_GATE.release.set()
    for thread in threads:
        thread.join(20)
    assert STATS_GATE.calls == [1, 7]

    stats = _stats(client, "counted")
    assert stats["name"] == "counted" and stats["version"] == "1"
    assert int(stats["inference_count"]) == 1 + 2 + 4 + 8
    assert int(stats["execution_count"]) == 3 + 2
    inference = stats["inference_stats"]
    assert _count(inference["success"]) == 11 and _count(inference.get("fail", {})) == 0
    assert _count(inference["queue"]) == 11 and _count(inference["compute_infer"]) == 11
    assert _count(inference["compute_input"]) == 11 and _count(inference["compute_output"]) == 11
    assert int(inference["compute_infer"]["ns"]) > 0
    assert int(inference["success"]["ns"]) >= int(inference["compute_infer"]["ns"]) // 8
    batches = {int(b["batch_size"]): b for b in stats["batch_stats"]}
    assert {size: _count(b["compute_infer"]) for size, b in batches.items()} == {1: 2, 2: 1, 4: 1, 7: 1}
    assert int(batches[7]["compute_infer"]["ns"]) > 0
    assert int(stats["last_inference"]) > 0


def test_an_unbatched_model_counts_native_calls_and_failures_too(client, server):
    x = grpcclient.InferInput("x", [1], "FP64")
    x.set_data_from_numpy(np.array([3.0]))
    assert client.infer("unbatched-stats", [x]).as_numpy("result").tolist() == [-3.0]
    assert client.infer("unbatched-stats", [x]).as_numpy("result").tolist() == [-3.0]
    with Client(server.address, timeout=10) as native:
        assert native.call("unbatched-stats", x=4.0) == -4.0
    stats = _stats(client, "unbatched-stats")
    assert int(stats["inference_count"]) == 3 and int(stats["execution_count"]) == 3
    assert {int(b["batch_size"]): _count(b["compute_infer"]) for b in stats["batch_stats"]} == {1: 3}
    assert _count(stats["inference_stats"]["success"]) == 3

    before = _stats(client, "fails")  # other tests of the package call it too
    with pytest.raises(InferenceServerException):
        client.infer("fails", [x])
    failed = _stats(client, "fails")
    assert _count(failed["inference_stats"]["fail"]) == _count(before["inference_stats"].get("fail", {})) + 1
    assert _count(failed["inference_stats"].get("success", {})) == 0
    assert int(failed["execution_count"]) == int(before.get("execution_count", 0)) + 1
    assert int(failed.get("inference_count", 0)) == 0


def test_statistics_of_every_model_and_of_unknown_ones(client):
    every = client.get_inference_statistics(as_json=True)["model_stats"]
    names = {(s["name"], s["version"]) for s in every}
    assert {("add", "1"), ("scale", "1"), ("scale", "2"), ("matmul", "1")} <= names
    assert len(client.get_inference_statistics("scale", as_json=True)["model_stats"]) == 2
    assert len(client.get_inference_statistics("scale", "2", as_json=True)["model_stats"]) == 1
    with pytest.raises(InferenceServerException) as caught:
        client.get_inference_statistics("nope")
    assert caught.value.status() == "StatusCode.NOT_FOUND"
