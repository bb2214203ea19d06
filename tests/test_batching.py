"""Batching over real sockets with grpcio clients: joining, splitting, deadlines, backpressure,
priorities, partial failure, policies.

No timing assertions: a model blocks on a Gate while requests queue, and the test waits
for the queue depth the server reports before letting it go.
"""

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from batching_support import Gate

from blazerpc_core import BlazeApp, RegistrationError, TensorInput, TensorOutput, hookimpl, model
from blazerpc_core.runtime.batcher import Batcher
from blazerpc_core.runtime.dispatch import BatchConfig
from blazerpc_core.runtime.plan import batch_plan
from blazerpc_core.settings import BatchSettings
from blazerpc_core.testing import BatchRecorder, array_from_proto, tensor_proto

TIMEOUT = 30


def serve(blazerpc_serve, blazerpc_connect, app, **settings):
    recorder = BatchRecorder()
    server = blazerpc_serve(app, plugins=[recorder, *settings.pop("plugins", [])], **settings)
    return blazerpc_connect(server), recorder


def doubling_app(gate: Gate, **knobs: Any) -> BlazeApp:
    app = BlazeApp()

    @app.model("double", **knobs)
    def double(x: list[float]) -> list[float]:
        gate.enter(list(x))
        return [v * 2 for v in x]

    return app


def test_concurrent_requests_share_one_call_and_each_gets_its_own_rows(blazerpc_serve, blazerpc_connect):
    gate = Gate()
    conn, rec = serve(blazerpc_serve, blazerpc_connect, doubling_app(gate, batch=True))
    call = conn.stub.PredictDouble
    first = call.future(conn.pb2.DoubleRequest(x=[0.5]), timeout=TIMEOUT)
    gate.wait_entered()
    # Distinct inputs with distinct row counts, so a mix-up would show.
    inputs = [[float(i)] * i for i in range(1, 6)]
    futures = [call.future(conn.pb2.DoubleRequest(x=x), timeout=TIMEOUT) for x in inputs]
    rec.wait_depth("double", sum(map(len, inputs)))
    gate.open()
    assert list(first.result().result) == [1.0]
    for x, future in zip(inputs, futures, strict=True):
        assert list(future.result().result) == [v * 2 for v in x]
    assert len(gate.calls) == 2
    assert sorted(gate.calls[1]) == sorted(v for x in inputs for v in x)
    assert rec.dispatched == [("double", 1, 1), ("double", 15, 5)]
    assert len([w for w in rec.waits if w[0] == "double"]) == 6


def test_a_lone_request_on_an_idle_model_does_not_wait_for_the_timeout(blazerpc_serve, blazerpc_connect):
    app = BlazeApp()

    @app.model("double", batch_timeout_ms=10_000)
    def double(x: list[float]) -> list[float]:
        return [v * 2 for v in x]

    conn, rec = serve(blazerpc_serve, blazerpc_connect, app)
    reply = conn.stub.PredictDouble(conn.pb2.DoubleRequest(x=[2.0]), timeout=2)
    assert list(reply.result) == [4.0]
    assert rec.dispatched == [("double", 1, 1)]


def test_requests_queued_behind_a_batch_go_as_soon_as_the_model_is_idle_not_after_the_timeout(
    blazerpc_serve, blazerpc_connect
):
    """Waiting for more rows while the model sits idle only adds latency (closed-loop clients lost 65%)."""
    gate = Gate()
    conn, rec = serve(blazerpc_serve, blazerpc_connect, doubling_app(gate, batch=True, batch_timeout_ms=600_000))
    call = conn.stub.PredictDouble
    first = call.future(conn.pb2.DoubleRequest(x=[1.0]), timeout=TIMEOUT)
    gate.wait_entered()
    queued = [call.future(conn.pb2.DoubleRequest(x=[float(i)]), timeout=TIMEOUT) for i in range(2, 5)]
    rec.wait_depth("double", 3)
    gate.open()  # the model is idle again: the three queued rows go now, ten minutes before the timeout
    assert [f.result().result[0] for f in (first, *queued)] == [2.0, 4.0, 6.0, 8.0]
    assert rec.dispatched == [("double", 1, 1), ("double", 3, 3)]


def test_with_a_batch_running_a_free_slot_waits_for_a_full_batch(blazerpc_serve, blazerpc_connect):
    """max_concurrent_batches > 1: while one batch runs, the timeout (or a full batch) decides the next."""
    gate = Gate()
    app = doubling_app(gate, batch=True, max_concurrent_batches=2, max_batch_size=2, batch_timeout_ms=600_000)
    conn, rec = serve(blazerpc_serve, blazerpc_connect, app)
    call = conn.stub.PredictDouble
    first = call.future(conn.pb2.DoubleRequest(x=[1.0]), timeout=TIMEOUT)
    gate.wait_entered()
    second = call.future(conn.pb2.DoubleRequest(x=[2.0]), timeout=TIMEOUT)
    rec.wait_depth("double", 1)  # a slot is free, but one row is not a full batch: it waits
    third = call.future(conn.pb2.DoubleRequest(x=[3.0]), timeout=TIMEOUT)
    rec.wait_for(lambda: len(rec.dispatched) == 2, "the second batch")
    assert rec.dispatched == [("double", 1, 1), ("double", 2, 2)]  # full: it went with the first still running
    gate.open()
    assert [f.result().result[0] for f in (first, second, third)] == [2.0, 4.0, 6.0]


def test_a_request_larger_than_max_batch_size_runs_on_its_own(blazerpc_serve, blazerpc_connect):
    gate = Gate()
    conn, rec = serve(blazerpc_serve, blazerpc_connect, doubling_app(gate, max_batch_size=2))
    call = conn.stub.PredictDouble
    first = call.future(conn.pb2.DoubleRequest(x=[1.0]), timeout=TIMEOUT)
    gate.wait_entered()
    big = call.future(conn.pb2.DoubleRequest(x=[1.0, 2.0, 3.0, 4.0, 5.0]), timeout=TIMEOUT)
    rec.wait_depth("double", 5)
    small = call.future(conn.pb2.DoubleRequest(x=[7.0]), timeout=TIMEOUT)
    rec.wait_depth("double", 6)
    gate.open()
    assert list(big.result().result) == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert list(small.result().result) == [14.0]
    first.result()
    assert rec.dispatched == [("double", 1, 1), ("double", 5, 1), ("double", 1, 1)]


def test_tensors_named_batch_are_batched_and_split_by_rows(blazerpc_serve, blazerpc_connect):
    gate = Gate()
    app = BlazeApp()

    @app.model("scale")
    def scale(x: TensorInput[np.float32, "batch", 3]) -> TensorOutput[np.float32, "batch", 3]:
        gate.enter(x.shape)
        return x * 10

    conn, rec = serve(blazerpc_serve, blazerpc_connect, app)
    call = conn.stub.PredictScale
    first = call.future(conn.pb2.ScaleRequest(x=tensor_proto(conn.pb2, np.zeros((1, 3), np.float32))), timeout=TIMEOUT)
    gate.wait_entered()
    sent = [np.full((rows, 3), rows, np.float32) + np.arange(3, dtype=np.float32) for rows in (2, 1, 3)]
    futures = [call.future(conn.pb2.ScaleRequest(x=tensor_proto(conn.pb2, a)), timeout=TIMEOUT) for a in sent]
    rec.wait_depth("scale", 6)
    gate.open()
    first.result()
    for a, future in zip(sent, futures, strict=True):
        np.testing.assert_array_equal(array_from_proto(future.result().result), a * 10)
    assert gate.calls == [(1, 3), (6, 3)]


def test_list_inputs_or_unnamed_dynamic_dims_alone_never_turn_batching_on(blazerpc_serve, blazerpc_connect):
    # Three calls must be inside the model at once: impossible if they were joined into one.
    barrier = threading.Barrier(3, timeout=TIMEOUT)
    seen: list[int] = []
    app = BlazeApp()

    @app.model("lengths")
    def lengths(x: list[float]) -> list[float]:
        seen.append(len(x))
        barrier.wait()
        return x

    @app.model("rows")
    def rows(x: TensorInput[np.float32, None, 2]) -> TensorOutput[np.float32, None, 2]:
        return x

    conn, rec = serve(blazerpc_serve, blazerpc_connect, app)
    stub = conn.stub
    futures = [stub.PredictLengths.future(conn.pb2.LengthsRequest(x=[1.0] * n), timeout=TIMEOUT) for n in (1, 2, 3)]
    assert sorted(len(f.result().result) for f in futures) == [1, 2, 3]
    stub.PredictRows(conn.pb2.RowsRequest(x=tensor_proto(conn.pb2, np.ones((2, 2), np.float32))), timeout=TIMEOUT)
    assert sorted(seen) == [1, 2, 3]
    assert rec.dispatched == []


def test_opting_in_a_model_that_cannot_be_batched_fails_at_registration():
    app = BlazeApp()
    with pytest.raises(RegistrationError, match=r"'add'.*cannot be batched: parameter 'a' \(double\)"):

        @app.model("add", batch=True)
        def add(a: float, b: float) -> float:
            return a + b

    with pytest.raises(RegistrationError, match=r"cannot be batched: its return type"):

        @app.model("total", max_batch_size=8)
        def total(x: list[float]) -> float:
            return sum(x)

    with pytest.raises(RegistrationError, match=r"streaming models are never batched"):

        @app.model("count", batch=True)
        def count(n: list[int]) -> Iterator[int]:
            yield from n

    # An app-wide knob opts in every model of the app; batch=False on the model wins.
    knobbed = BlazeApp(max_batch_size=8)
    with pytest.raises(RegistrationError, match="pass batch=False"):

        @knobbed.model("add")
        def add2(a: float, b: float) -> float:
            return a + b

    @knobbed.model("add", batch=False)
    def add3(a: float, b: float) -> float:
        return a + b

    assert [spec.name for spec in app] == []
    assert [spec.name for spec in knobbed] == ["add"]


def test_a_standalone_model_that_opts_in_but_cannot_batch_fails_when_the_server_is_built(blazerpc_serve):
    @model("add", batch=True)
    def add(a: float, b: float) -> float:
        return a + b

    with pytest.raises(RegistrationError, match="cannot be batched"):
        blazerpc_serve(add)


def test_server_level_knobs_never_turn_batching_on(blazerpc_serve, blazerpc_connect):
    app = BlazeApp()

    @app.model("count")
    def count(x: list[str]) -> list[int]:
        return [len(t) for t in x]

    conn, rec = serve(blazerpc_serve, blazerpc_connect, app, batching=BatchSettings(max_batch_size=4))
    reply = conn.stub.PredictCount(conn.pb2.CountRequest(x=["ab", "c"]))
    assert list(reply.result) == [2, 1]
    assert rec.dispatched == []


def test_batch_false_wins_over_a_batch_named_tensor(blazerpc_serve, blazerpc_connect):
    app = BlazeApp()

    @app.model("scale", batch=False)
    def scale(x: TensorInput[np.float32, "batch", 2]) -> TensorOutput[np.float32, "batch", 2]:
        return x

    conn, rec = serve(blazerpc_serve, blazerpc_connect, app)
    stub = conn.stub
    stub.PredictScale(conn.pb2.ScaleRequest(x=tensor_proto(conn.pb2, np.ones((1, 2), np.float32))), timeout=TIMEOUT)
    assert rec.dispatched == []


def test_server_knobs_are_defaults_and_the_model_wins(blazerpc_serve, blazerpc_connect):
    gate = Gate()
    app = doubling_app(gate, batch=True)
    conn, rec = serve(blazerpc_serve, blazerpc_connect, app, batching=BatchSettings(max_batch_size=2))
    call = conn.stub.PredictDouble
    first = call.future(conn.pb2.DoubleRequest(x=[0.0]), timeout=TIMEOUT)
    gate.wait_entered()
    futures = []
    for i in range(1, 5):
        futures.append(call.future(conn.pb2.DoubleRequest(x=[float(i)]), timeout=TIMEOUT))
        rec.wait_depth("double", i)
    gate.open()
    assert [f.result().result[0] for f in futures] == [2.0, 4.0, 6.0, 8.0]
    first.result()
    assert rec.dispatched == [("double", 1, 1), ("double", 2, 2), ("double", 2, 2)]

    spec = next(iter(doubling_app(Gate(), max_batch_size=3, batch_timeout_ms=7)))
    server_settings = BatchSettings(max_batch_size=100, batch_timeout_ms=1, max_queue_size=50)
    merged = spec.batching.merged_over(server_settings)
    config = BatchConfig.from_settings(merged, spec.label)
    assert (config.max_batch_size, config.batch_timeout, config.max_queue_size) == (3, 0.007, 50)
    assert BatchConfig.from_settings(BatchSettings(), "m") == BatchConfig()


def test_expired_and_cancelled_requests_never_reach_the_model(blazerpc_serve, blazerpc_connect):
    gate = Gate()
    conn, rec = serve(blazerpc_serve, blazerpc_connect, doubling_app(gate, batch=True))
    call = conn.stub.PredictDouble
    first = call.future(conn.pb2.DoubleRequest(x=[1.0]), timeout=TIMEOUT)
    gate.wait_entered()
    cancelled = call.future(conn.pb2.DoubleRequest(x=[-2.0]), timeout=TIMEOUT)
    rec.wait_depth("double", 1)
    expired = call.future(conn.pb2.DoubleRequest(x=[-1.0]), timeout=2.0)
    rec.wait_depth("double", 2)
    cancelled.cancel()
    assert expired.exception(TIMEOUT).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    rec.wait_depth("double", 0)
    gate.open()
    assert list(first.result().result) == [2.0]
    assert list(call(conn.pb2.DoubleRequest(x=[3.0]), timeout=TIMEOUT).result) == [6.0]
    assert cancelled.cancelled()
    assert gate.calls == [[1.0], [3.0]]


def test_a_full_queue_answers_resource_exhausted_naming_the_model_and_limit(blazerpc_serve, blazerpc_connect):
    gate = Gate()
    conn, rec = serve(blazerpc_serve, blazerpc_connect, doubling_app(gate, max_queue_size=3))
    call = conn.stub.PredictDouble
    first = call.future(conn.pb2.DoubleRequest(x=[1.0]), timeout=TIMEOUT)
    gate.wait_entered()
    queued = call.future(conn.pb2.DoubleRequest(x=[2.0, 3.0]), timeout=TIMEOUT)
    rec.wait_depth("double", 2)
    with pytest.raises(grpc.RpcError) as refused:
        call(conn.pb2.DoubleRequest(x=[4.0, 5.0]), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "'double'" in refused.value.details() and "3 rows" in refused.value.details()
    # One more row still fits.
    fits = call.future(conn.pb2.DoubleRequest(x=[6.0]), timeout=TIMEOUT)
    rec.wait_depth("double", 3)
    gate.open()
    assert list(queued.result().result) == [4.0, 6.0]
    assert list(fits.result().result) == [12.0]
    first.result()


def test_priorities_reorder_the_queue_and_invalid_ones_are_refused(blazerpc_serve, blazerpc_connect):
    gate = Gate()
    conn, rec = serve(blazerpc_serve, blazerpc_connect, doubling_app(gate, max_batch_size=1))
    call = conn.stub.PredictDouble
    first = call.future(conn.pb2.DoubleRequest(x=[0.0]), timeout=TIMEOUT)
    gate.wait_entered()
    futures = []
    for depth, (value, priority) in enumerate(
        [(1.0, "-50"), (2.0, None), (3.0, "50"), (4.0, "50"), (5.0, "0")], start=1
    ):
        metadata = None if priority is None else (("x-blazerpc-priority", priority),)
        futures.append(call.future(conn.pb2.DoubleRequest(x=[value]), timeout=TIMEOUT, metadata=metadata))
        rec.wait_depth("double", depth)
    gate.open()
    for future in [first, *futures]:
        future.result()
    for bad in ("high", "1.5", "101", ""):
        with pytest.raises(grpc.RpcError) as refused:
            call(conn.pb2.DoubleRequest(x=[1.0]), timeout=TIMEOUT, metadata=(("x-blazerpc-priority", bad),))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "x-blazerpc-priority" in refused.value.details()
    # Highest first, FIFO within a level (the default is 0).
    assert gate.calls == [[0.0], [3.0], [4.0], [2.0], [5.0], [1.0]]


def test_partial_failure_fails_only_the_requests_owning_the_failed_rows(blazerpc_serve, blazerpc_connect):
    gate, tensor_gate = Gate(), Gate()
    app = BlazeApp()

    @app.model("invert", batch=True)
    def invert(x: list[float]) -> list[float]:
        gate.enter(list(x))
        return [ZeroDivisionError(f"cannot invert {v}") if v == 0 else 1 / v for v in x]  # type: ignore[misc]

    @app.model("norm")
    def norm(x: TensorInput[np.float32, "batch", 2]) -> TensorOutput[np.float32, "batch", 2]:
        tensor_gate.enter(x.shape)
        # A list of rows (or exceptions) stands for the output tensor.
        return [ValueError("zero row") if not row.any() else row / row.sum() for row in x]  # type: ignore[return-value]

    conn, rec = serve(blazerpc_serve, blazerpc_connect, app)
    stub = conn.stub
    first = stub.PredictInvert.future(conn.pb2.InvertRequest(x=[1.0]), timeout=TIMEOUT)
    gate.wait_entered()
    good = stub.PredictInvert.future(conn.pb2.InvertRequest(x=[2.0, 4.0]), timeout=TIMEOUT)
    rec.wait_depth("invert", 2)
    bad = stub.PredictInvert.future(conn.pb2.InvertRequest(x=[5.0, 0.0]), timeout=TIMEOUT)
    rec.wait_depth("invert", 4)
    gate.open()
    first.result()
    assert list(good.result().result) == [0.5, 0.25]
    error = bad.exception()
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "cannot invert 0.0" in error.details() and "ZeroDivisionError" in error.details()

    norm_call = stub.PredictNorm
    sent = [np.array([[1, 1]], np.float32), np.array([[0, 0], [1, 1]], np.float32), np.array([[1, 3]], np.float32)]
    futures = [norm_call.future(conn.pb2.NormRequest(x=tensor_proto(conn.pb2, sent[0])), timeout=TIMEOUT)]
    tensor_gate.wait_entered()
    for depth, a in ((2, sent[1]), (3, sent[2])):
        futures.append(norm_call.future(conn.pb2.NormRequest(x=tensor_proto(conn.pb2, a)), timeout=TIMEOUT))
        rec.wait_depth("norm", depth)
    tensor_gate.open()
    np.testing.assert_allclose(array_from_proto(futures[0].result().result), [[0.5, 0.5]])
    assert futures[1].exception().code() == grpc.StatusCode.INTERNAL
    assert "zero row" in futures[1].exception().details()
    np.testing.assert_allclose(array_from_proto(futures[2].result().result), [[0.25, 0.75]])
    assert gate.calls == [[1.0], [2.0, 4.0, 5.0, 0.0]]
    assert tensor_gate.calls == [(1, 2), (3, 2)]


def test_an_output_with_the_wrong_row_count_fails_the_whole_batch(blazerpc_serve, blazerpc_connect):
    gate = Gate()
    app = BlazeApp()

    @app.model("short", batch=True)
    def short(x: list[float]) -> list[float]:
        gate.enter(list(x))
        return x[1:] if len(x) > 1 else x

    conn, rec = serve(blazerpc_serve, blazerpc_connect, app)
    call = conn.stub.PredictShort
    first = call.future(conn.pb2.ShortRequest(x=[1.0]), timeout=TIMEOUT)
    gate.wait_entered()
    futures = [call.future(conn.pb2.ShortRequest(x=[float(i)]), timeout=TIMEOUT) for i in (2, 3)]
    rec.wait_depth("short", 2)
    gate.open()
    first.result()
    for future in futures:
        error = future.exception()
        assert error.code() == grpc.StatusCode.INTERNAL
        assert "'short'" in error.details() and "1 rows" in error.details() and "batch of 2 rows" in error.details()


def test_inputs_of_one_request_must_have_the_same_row_count(blazerpc_serve, blazerpc_connect):
    app = BlazeApp()

    @app.model("pair", batch=True)
    def pair(a: list[float], b: list[float]) -> list[float]:
        return [x + y for x, y in zip(a, b, strict=True)]

    conn, _ = serve(blazerpc_serve, blazerpc_connect, app)
    call = conn.stub.PredictPair
    with pytest.raises(grpc.RpcError) as refused:
        call(conn.pb2.PairRequest(a=[1.0, 2.0], b=[1.0]), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'a' has 2, 'b' has 1" in refused.value.details()
    assert list(call(conn.pb2.PairRequest(a=[1.0, 2.0], b=[3.0, 4.0]), timeout=TIMEOUT).result) == [4.0, 6.0]


def test_max_concurrent_batches_lets_two_batches_run_at_once(blazerpc_serve, blazerpc_connect):
    # Both calls must be inside the model at once: impossible with one batch at a time.
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    entered = threading.Event()
    app = BlazeApp()

    @app.model("pair", max_concurrent_batches=2)
    def pair(x: list[float]) -> list[float]:
        entered.set()
        barrier.wait()
        return x

    conn, rec = serve(blazerpc_serve, blazerpc_connect, app)
    call = conn.stub.PredictPair
    first = call.future(conn.pb2.PairRequest(x=[0.0]), timeout=TIMEOUT)
    assert entered.wait(TIMEOUT)
    second = call.future(conn.pb2.PairRequest(x=[1.0]), timeout=TIMEOUT)
    assert [f.result().result[0] for f in (first, second)] == [0.0, 1.0]
    assert rec.dispatched == [("pair", 1, 1), ("pair", 1, 1)]


def test_async_models_are_batched_on_the_loop(blazerpc_serve, blazerpc_connect):
    app = BlazeApp()
    sizes: list[int] = []

    @app.model("shout", batch=True)
    async def shout(x: list[str]) -> list[str]:
        sizes.append(len(x))
        return [t.upper() for t in x]

    conn, _ = serve(blazerpc_serve, blazerpc_connect, app)
    call = conn.stub.PredictShout
    futures = [call.future(conn.pb2.ShoutRequest(x=[f"a{i}", f"b{i}"]), timeout=TIMEOUT) for i in range(8)]
    for i, future in enumerate(futures):
        assert list(future.result().result) == [f"A{i}", f"B{i}"]
    assert sum(sizes) == 16


def test_adaptive_policy_refuses_early_what_cannot_meet_its_latency_target(blazerpc_serve, blazerpc_connect):
    gate = Gate()
    app = BlazeApp()

    @app.model("slow", max_latency_ms=50)
    def slow(x: list[float]) -> list[float]:
        if x[0] < 0:
            gate.enter(list(x))
        time.sleep(0.2)  # every batch costs at least 200 ms: four times the target
        return x

    conn, rec = serve(blazerpc_serve, blazerpc_connect, app)
    call = conn.stub.PredictSlow
    for i in range(3):  # the model is idle: admitted, and the policy learns its cost
        assert list(call(conn.pb2.SlowRequest(x=[float(i)]), timeout=TIMEOUT).result) == [float(i)]
    busy = call.future(conn.pb2.SlowRequest(x=[-1.0]), timeout=TIMEOUT)
    gate.wait_entered()
    with pytest.raises(grpc.RpcError) as refused:
        call(conn.pb2.SlowRequest(x=[5.0]), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "'slow'" in refused.value.details() and "latency target of 50 ms" in refused.value.details()
    gate.open()
    assert list(busy.result().result) == [-1.0]
    assert list(call(conn.pb2.SlowRequest(x=[6.0]), timeout=TIMEOUT).result) == [6.0]
    # The refused request was never queued: five batches, one per admitted request.
    assert rec.dispatched == [("slow", 1, 1)] * 5


def test_adaptive_policy_batches_queued_requests(blazerpc_serve, blazerpc_connect):
    gate = Gate()
    conn, rec = serve(blazerpc_serve, blazerpc_connect, doubling_app(gate, policy="adaptive"))
    call = conn.stub.PredictDouble
    first = call.future(conn.pb2.DoubleRequest(x=[0.0]), timeout=TIMEOUT)
    gate.wait_entered()
    futures = [call.future(conn.pb2.DoubleRequest(x=[float(i)]), timeout=TIMEOUT) for i in range(1, 5)]
    rec.wait_depth("double", 4)
    gate.open()
    assert [f.result().result[0] for f in futures] == [2.0, 4.0, 6.0, 8.0]
    first.result()
    assert rec.dispatched == [("double", 1, 1), ("double", 4, 4)]


class _PairsRule:
    """Waits until two requests are queued (the batcher re-asks once max_batch_size rows are)."""

    def admit(self, state: Any, rows: int, now: float, remaining: float | None) -> None:
        return None

    def delay(self, state: Any, now: float) -> float:
        return 0.0 if state.queue.count >= 2 else 3600.0

    def observe(self, rows: int, seconds: float) -> None:
        return None


class _PairsPolicy:
    name = "pairs"

    def create_runner(self, method: Any, invoker: Any, events: Any) -> Any:
        plan = batch_plan(method)
        assert plan is not None
        return Batcher(method, invoker, events, plan=plan, config=BatchConfig(max_batch_size=2), rule=_PairsRule())


class _PairsPlugin:
    __name__ = "pairs-policy"

    def __init__(self) -> None:
        self.asked: list[str] = []

    @hookimpl
    def blazerpc_batching_policy(self, spec: Any, settings: Any) -> Any:
        self.asked.append(spec.name)
        return _PairsPolicy() if spec.name == "pairs" else None


def test_a_third_party_policy_schedules_the_models_it_claims(blazerpc_serve, blazerpc_connect):
    calls: list[list[float]] = []
    app = BlazeApp()

    @app.model("pairs", batch=True)
    def pairs(x: list[float]) -> list[float]:
        calls.append(list(x))
        return [v + 1 for v in x]

    @app.model("others", batch=True)
    def others(x: list[float]) -> list[float]:
        return [v - 1 for v in x]

    plugin = _PairsPlugin()
    conn, rec = serve(blazerpc_serve, blazerpc_connect, app, plugins=[plugin])
    stub = conn.stub
    # The built-in policy still serves "others": a lone request goes at once.
    assert list(stub.PredictOthers(conn.pb2.OthersRequest(x=[1.0]), timeout=TIMEOUT).result) == [0.0]
    one = stub.PredictPairs.future(conn.pb2.PairsRequest(x=[1.0]), timeout=TIMEOUT)
    rec.wait_depth("pairs", 1)
    two = stub.PredictPairs.future(conn.pb2.PairsRequest(x=[2.0]), timeout=TIMEOUT)
    assert list(one.result().result) == [2.0]
    assert list(two.result().result) == [3.0]
    assert sorted(plugin.asked) == ["others", "pairs"]
    assert calls == [[1.0, 2.0]]


def test_a_cheap_model_found_idle_runs_each_request_alone_on_the_loop_with_the_same_answers_and_errors(
    blazerpc_serve, blazerpc_connect
):
    """Once promoted inline, and its inline calls measured cheap, a request that finds a cheap
    batched model idle is called at once, alone (no queue wait), and still gets its own rows,
    per-row failures and row-count checks."""
    from blazerpc_core.runtime.batcher import TYPICAL_WINDOW
    from blazerpc_core.runtime.executor import PROMOTE_AFTER

    threads: list[str] = []
    app = BlazeApp()

    @app.model("halve", batch=True)
    def halve(x: list[float]) -> list[float]:
        threads.append(threading.current_thread().name)
        if -2.0 in x:
            return x[1:]  # a bug: one row short
        return [ValueError(f"cannot halve {v}") if v < 0 else v / 2 for v in x]

    conn, rec = serve(blazerpc_serve, blazerpc_connect, app, inline_budget_us=20_000)
    call = lambda *x: conn.stub.PredictHalve(conn.pb2.HalveRequest(x=list(x)), timeout=TIMEOUT)
    for _ in range(PROMOTE_AFTER):
        call(1.0)
    assert all(name.startswith("blazerpc-model") for name in threads)
    for _ in range(TYPICAL_WINDOW):
        call(1.0)  # inline, through the queue: what a call typically takes is not known yet
    assert threads[-1] == "blazerpc-test-server"
    waits = len(rec.waits)
    assert list(call(4.0, 6.0).result) == [2.0, 3.0]
    assert threads[-1] == "blazerpc-test-server"  # on the loop, the request alone
    assert rec.dispatched[-1] == ("halve", 2, 1)
    with pytest.raises(grpc.RpcError) as failed:
        call(8.0, -1.0)
    assert failed.value.code() == grpc.StatusCode.INTERNAL and "cannot halve -1.0" in failed.value.details()
    with pytest.raises(grpc.RpcError) as short:
        call(-2.0, 1.0)
    assert short.value.code() == grpc.StatusCode.INTERNAL and "batch of 2 rows" in short.value.details()
    assert list(call(10.0).result) == [5.0]  # the failures harmed nothing
    assert threads[-1] == "blazerpc-test-server"
    assert len(rec.waits) == waits  # none of them queued


def _spin(seconds: float) -> None:
    """Busy the calling thread for ``seconds`` (a model that computes, not one that waits)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _queued_once_settled(call: Any, rec: Any, count: int) -> int:
    """How many of ``count`` lone calls took the queue, once the model is inline and its typical time known."""
    from blazerpc_core.runtime.batcher import TYPICAL_WINDOW
    from blazerpc_core.runtime.executor import PROMOTE_AFTER

    for _ in range(PROMOTE_AFTER + TYPICAL_WINDOW):
        call()
    waits = len(rec.waits)
    for _ in range(count):
        assert list(call().result) == [1.0]
    return len(rec.waits) - waits


def test_a_rare_long_call_does_not_send_a_cheap_models_lone_requests_through_the_queue(
    blazerpc_serve, blazerpc_connect
):
    """A garbage collection or a preemption now and then makes one 2 us call take hundreds of
    microseconds. Judged on a running mean, each such call sent the next requests through the
    queue (its future, a loop turn, the split); judged on the median of recent calls, a cheap
    model's lone requests keep running alone. Tried: one call in eight busy for 400 us, under
    the adaptive rule (which may hold a lone request, so the model's cost decides)."""
    calls = itertools.count()
    app = BlazeApp()

    @app.model("spiky", batch=True, policy="adaptive")
    def spiky(x: list[float]) -> list[float]:
        if next(calls) % 8 == 7:
            _spin(400e-6)
        return x

    conn, rec = serve(blazerpc_serve, blazerpc_connect, app, inline_budget_us=20_000)
    call = lambda: conn.stub.PredictSpiky(conn.pb2.SpikyRequest(x=[1.0]), timeout=TIMEOUT)
    assert _queued_once_settled(call, rec, 64) == 0  # the slow ones and those after them ran alone too


@pytest.mark.parametrize(("policy", "alone"), [("size-or-timeout", True), ("adaptive", False)])
def test_under_a_rule_that_never_holds_a_lone_request_an_inline_model_of_any_cost_is_called_alone(
    blazerpc_serve, blazerpc_connect, policy, alone
):
    """size-or-timeout sends a request that finds the model idle at once, as a batch of one;
    through the queue that was the same call plus the queue's own cost (about 40 us a call at one
    client for x @ W, whose calls in the server sometimes take over ALONE_BELOW). So with it
    a 60 us model, inline, is called alone; adaptive may hold the request to gather others,
    so the same model there still takes the queue."""
    from blazerpc_core.runtime.batcher import ALONE_BELOW

    app = BlazeApp()

    @app.model("busy", batch=True, policy=policy)
    def busy(x: list[float]) -> list[float]:
        _spin(3 * ALONE_BELOW)
        return x

    conn, rec = serve(blazerpc_serve, blazerpc_connect, app, inline_budget_us=20_000)
    call = lambda: conn.stub.PredictBusy(conn.pb2.BusyRequest(x=[1.0]), timeout=TIMEOUT)
    assert (_queued_once_settled(call, rec, 20) == 0) is alone


def test_batches_are_judged_cheap_by_their_cpu_per_row_so_bigger_batches_do_not_keep_a_cheap_model_in_the_pool(
    blazerpc_serve, blazerpc_connect
):
    """Under load a cheap model's pool batches grow; judged whole, 4-row batches of 100 us a row
    (400 us, over half the 400 us budget) kept it in the pool for good, each batch paying a hop."""
    from blazerpc_core.runtime.executor import PROMOTE_AFTER

    threads: list[str] = []
    app = BlazeApp()

    @app.model("busy", batch=True)
    def busy(x: list[float]) -> list[float]:
        threads.append(threading.current_thread().name)
        end = time.thread_time() + 100e-6 * len(x)  # 100 us of CPU per row
        while time.thread_time() < end:
            pass
        return x

    conn, _ = serve(blazerpc_serve, blazerpc_connect, app, inline_budget_us=400)
    call = lambda rows: conn.stub.PredictBusy(conn.pb2.BusyRequest(x=[1.0] * rows), timeout=TIMEOUT)
    for i in range(PROMOTE_AFTER):
        call(4 if i % 2 else 1)  # one-row batches show it is fast by the clock
    assert all(name.startswith("blazerpc-model") for name in threads)
    assert list(call(4).result) == [1.0] * 4
    assert threads[-1] == "blazerpc-test-server"  # promoted: on the loop
