"""Ordinary inputs that used to hang or fail wrongly, and models that hang or crawl.

Each test names what it tried; all run against a real server over a real socket.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

import grpc
import pytest

from blazerpc_core import BlazeApp
from blazerpc_core.testing import BatchRecorder, compile_stubs, start_server


def _stubs(server):
    stubs = compile_stubs(server.proto_text)
    return stubs.pb2, stubs.pb2_grpc


def test_a_zero_row_request_to_a_batched_model_is_answered_and_does_not_hold_shutdown():
    app = BlazeApp()

    @app.model("sentiment", batch=True)
    def sentiment(text: list[str]) -> list[float]:
        return [0.9 if "good" in t else 0.1 for t in text]

    server = start_server(app)
    pb2, rpc = _stubs(server)
    with grpc.insecure_channel(server.address) as channel:
        stub = rpc.InferenceServiceStub(channel)
        assert list(stub.PredictSentiment(pb2.SentimentRequest(text=[]), timeout=5).result) == []
        assert list(stub.PredictSentiment(pb2.SentimentRequest(text=["good"]), timeout=5).result) == [
            pytest.approx(0.9)
        ]
    started = time.monotonic()
    server.stop(grace_period=30)
    assert time.monotonic() - started < 10


def test_a_request_larger_than_the_queue_is_served_alone_and_refused_only_behind_others():
    release = threading.Event()
    app = BlazeApp()

    @app.model("rows", max_queue_size=4, max_batch_size=4)
    def rows(x: list[float]) -> list[float]:
        if x and x[0] < 0:
            release.wait(30)
        return [v * 2 for v in x]

    recorder = BatchRecorder()
    server = start_server(app, plugins=[recorder])
    pb2, rpc = _stubs(server)
    with grpc.insecure_channel(server.address) as channel:
        stub = rpc.InferenceServiceStub(channel)
        # Idle server: a 10-row request (over max_queue_size=4) is answered, not "overloaded".
        assert list(stub.PredictRows(pb2.RowsRequest(x=[1.0] * 10), timeout=5).result) == [2.0] * 10
        # Busy server: one batch holds the model, one request waits in the queue; a big one is refused.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            holding = pool.submit(stub.PredictRows, pb2.RowsRequest(x=[-1.0]), timeout=10)
            recorder.wait_for(lambda: len(recorder.dispatched) == 2, "the holding batch")
            queued = pool.submit(stub.PredictRows, pb2.RowsRequest(x=[1.0]), timeout=10)
            recorder.wait_depth("rows", 1)
            with pytest.raises(grpc.RpcError) as refused:
                stub.PredictRows(pb2.RowsRequest(x=[1.0] * 10), timeout=5)
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_queue_size" in refused.value.details()
            release.set()
            assert list(holding.result().result) == [-2.0]
            assert list(queued.result().result) == [2.0]
    server.stop()


def test_hung_calls_of_one_model_never_starve_the_others():
    hang = threading.Event()
    app = BlazeApp()

    @app.model("stuck")
    def stuck(x: float) -> float:
        hang.wait(60)
        return x

    @app.model("add")
    def add(a: float, b: float) -> float:
        return a + b

    # 4 threads in all, so "stuck" may take 2; 8 hung calls then wait for a thread.
    server = start_server(app, max_workers=4, inline_budget_us=0)
    pb2, rpc = _stubs(server)
    try:
        with grpc.insecure_channel(server.address) as channel, concurrent.futures.ThreadPoolExecutor(8) as pool:
            stub = rpc.InferenceServiceStub(channel)
            hung = [pool.submit(stub.PredictStuck, pb2.StuckRequest(x=1.0), timeout=30) for _ in range(8)]
            time.sleep(0.5)
            for _ in range(20):
                assert stub.PredictAdd(pb2.AddRequest(a=1, b=2), timeout=2).result == 3
            hang.set()
            assert all(f.result().result == 1.0 for f in hung)
    finally:
        hang.set()
        server.stop()


def test_calls_whose_deadline_passed_while_waiting_for_a_thread_never_reach_the_model():
    gate = threading.Event()
    entered = threading.Event()
    calls: list[float] = []
    app = BlazeApp()

    @app.model("slow")
    def slow(x: float) -> float:
        calls.append(x)
        entered.set()
        gate.wait(30)
        return x

    server = start_server(app, max_model_threads=1, inline_budget_us=0)
    pb2, rpc = _stubs(server)
    try:
        with grpc.insecure_channel(server.address) as channel, concurrent.futures.ThreadPoolExecutor(6) as pool:
            stub = rpc.InferenceServiceStub(channel)
            first = pool.submit(stub.PredictSlow, pb2.SlowRequest(x=0.0), timeout=20)
            assert entered.wait(10)
            late = [pool.submit(stub.PredictSlow, pb2.SlowRequest(x=float(i)), timeout=0.3) for i in range(1, 6)]
            sent = time.monotonic()
            for future in late:
                with pytest.raises(grpc.RpcError) as failed:
                    future.result()
                assert failed.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            # The server counts each deadline from when the call's headers reached it, which
            # on a loaded machine is later than the client's: free the slot well after both.
            time.sleep(max(0.0, sent + 1.0 - time.monotonic()))
            gate.set()
            assert first.result().result == 0.0
            # The model is free again: a fresh call runs.
            assert stub.PredictSlow(pb2.SlowRequest(x=9.0), timeout=5).result == 9.0
        assert calls == [0.0, 9.0], "calls whose client had gone were run"
    finally:
        gate.set()
        server.stop()


def test_batched_rows_that_cannot_be_answered_in_time_are_left_out_of_the_batch():
    gate = threading.Event()
    seen: list[list[float]] = []
    app = BlazeApp()

    @app.model("rows", max_batch_size=8, batch_timeout_ms=1)
    def rows(x: list[float]) -> list[float]:
        seen.append(list(x))
        if x and x[0] < 0:
            gate.wait(30)
        return x

    recorder = BatchRecorder()
    server = start_server(app, plugins=[recorder])
    pb2, rpc = _stubs(server)
    try:
        with grpc.insecure_channel(server.address) as channel, concurrent.futures.ThreadPoolExecutor(6) as pool:
            stub = rpc.InferenceServiceStub(channel)
            holding = pool.submit(stub.PredictRows, pb2.RowsRequest(x=[-1.0]), timeout=20)
            recorder.wait_for(lambda: len(recorder.dispatched) == 1, "the holding batch")
            short = [pool.submit(stub.PredictRows, pb2.RowsRequest(x=[float(i)]), timeout=0.3) for i in range(3)]
            patient = pool.submit(stub.PredictRows, pb2.RowsRequest(x=[7.0]), timeout=20)
            recorder.wait_depth("rows", 4)
            for future in short:
                with pytest.raises(grpc.RpcError) as failed:
                    future.result()
                assert failed.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            gate.set()
            assert list(holding.result().result) == [-1.0]
            assert list(patient.result().result) == [7.0]
        assert seen == [[-1.0], [7.0]]
    finally:
        gate.set()
        server.stop()


def test_status_messages_are_capped_and_carry_no_server_paths_unless_asked():
    app = BlazeApp()

    @app.model("loud")
    def loud(n: int) -> int:
        raise ValueError("failed in /srv/models/secret/loader.py\n" + "Traceback line\n" * 10 + "x" * n)

    for full, expect_path in ((False, False), (True, True)):
        server = start_server(app, full_error_details=full)
        pb2, rpc = _stubs(server)
        with grpc.insecure_channel(server.address) as channel:
            stub = rpc.InferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as failed:
                stub.PredictLoud(pb2.LoudRequest(n=200_000), timeout=5)
        server.stop()
        details = failed.value.details()
        assert failed.value.code() is grpc.StatusCode.INTERNAL
        assert len(details) <= 512
        assert "loader.py" in details
        assert ("/srv/models/secret" in details) is expect_path
        assert ("Traceback" in details) is expect_path


def test_the_pool_thread_refuses_calls_whose_deadline_passed_even_when_the_loop_is_too_busy_to_notice():
    hold = threading.Event()
    held = threading.Event()
    ran: list[float] = []
    app = BlazeApp()

    @app.model("hold")
    def hold_model(x: float) -> float:
        held.set()
        hold.wait(30)
        return x

    @app.model("work")
    def work(x: float) -> float:
        ran.append(x)
        return x

    @app.model("block-loop")
    async def block_loop(seconds: float) -> float:
        time.sleep(seconds)  # a badly written async model: it blocks the event loop
        return seconds

    # One thread: "work" calls wait in the pool's queue behind "hold".
    server = start_server(app, max_workers=1, max_model_threads=5, inline_budget_us=0)
    pb2, rpc = _stubs(server)
    try:
        with grpc.insecure_channel(server.address) as channel, concurrent.futures.ThreadPoolExecutor(6) as pool:
            stub = rpc.InferenceServiceStub(channel)
            holding = pool.submit(stub.PredictHold, pb2.HoldRequest(x=1.0), timeout=20)
            assert held.wait(10)
            queued = [pool.submit(stub.PredictWork, pb2.WorkRequest(x=float(i)), timeout=0.3) for i in range(3)]
            time.sleep(0.1)
            blocker = pool.submit(stub.PredictBlockLoop, pb2.BlockLoopRequest(seconds=1.0), timeout=10)
            time.sleep(0.5)  # the loop is blocked and the queued calls' deadlines have passed...
            hold.set()  # ...when the thread frees up and reaches them
            for future in queued:
                with pytest.raises(grpc.RpcError) as failed:
                    future.result()
                assert failed.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            assert holding.result().result == 1.0
            assert blocker.result().result == 1.0
        assert ran == [], "the pool ran calls whose caller had already gone"
    finally:
        hold.set()
        server.stop()


def test_a_freed_thread_takes_the_models_next_waiting_call_itself_even_while_the_loop_is_blocked():
    """Per-model slots are handed on in the pool thread: under overload the loop is busy, and
    handing a slot back through it left a 20 ms model's threads idle an eighth of the time."""
    hold = threading.Event()
    held = threading.Event()
    ran_at: list[float] = []
    blocked: list[tuple[float, float]] = []
    app = BlazeApp()

    @app.model("hold")
    def hold_model(x: float) -> float:
        if x < 0:
            held.set()
            hold.wait(30)
        else:
            ran_at.append(time.monotonic())
        return x

    @app.model("block-loop")
    async def block_loop(seconds: float) -> float:
        started = time.monotonic()
        time.sleep(seconds)  # blocks the event loop on purpose
        blocked.append((started, time.monotonic()))
        return seconds

    server = start_server(app, max_model_threads=1, inline_budget_us=0)
    pb2, rpc = _stubs(server)
    try:
        with grpc.insecure_channel(server.address) as channel, concurrent.futures.ThreadPoolExecutor(4) as pool:
            stub = rpc.InferenceServiceStub(channel)
            holding = pool.submit(stub.PredictHold, pb2.HoldRequest(x=-1.0), timeout=20)
            assert held.wait(10)
            waiting = pool.submit(stub.PredictHold, pb2.HoldRequest(x=2.0), timeout=20)
            time.sleep(0.2)  # it waits for the model's one slot
            blocker = pool.submit(stub.PredictBlockLoop, pb2.BlockLoopRequest(seconds=1.0), timeout=10)
            time.sleep(0.3)
            hold.set()  # the loop is blocked: only the pool thread can start the waiting call now
            assert blocker.result().result == 1.0
            assert waiting.result().result == 2.0 and holding.result().result == -1.0
        (start, end), = blocked
        assert len(ran_at) == 1 and start < ran_at[0] < end, "the waiting call only ran once the loop was free"
    finally:
        hold.set()
        server.stop()


def test_a_model_that_was_slow_once_is_not_refused_for_good_on_its_old_call_times():
    """Calls are refused when the model's recent mean time says they cannot finish; a refused call
    measures nothing, so once none has run for a second, refusals shrink the estimate until calls
    run (and measure) again."""
    slow = {"left": 5}
    app = BlazeApp()

    @app.model("moody")
    def moody(x: float) -> float:
        if slow["left"] > 0:
            slow["left"] -= 1
            time.sleep(0.5)
        return x

    server = start_server(app, inline_budget_us=0)
    pb2, rpc = _stubs(server)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = rpc.InferenceServiceStub(channel)
            for _ in range(5):
                assert stub.PredictMoody(pb2.MoodyRequest(x=1.0), timeout=10).result == 1.0
            outcomes: list[object] = []
            give_up = time.monotonic() + 20
            while time.monotonic() < give_up:
                try:
                    outcomes.append(stub.PredictMoody(pb2.MoodyRequest(x=2.0), timeout=0.3).result)
                except grpc.RpcError as exc:
                    outcomes.append(exc.code())
                if outcomes[-1] == 2.0:
                    break
                time.sleep(0.05)
        assert outcomes[0] is grpc.StatusCode.DEADLINE_EXCEEDED  # 0.3 s left, the model took 0.5 s
        assert outcomes[-1] == 2.0, "every call was refused on the model's old call times"
        assert set(outcomes[:-1]) <= {grpc.StatusCode.DEADLINE_EXCEEDED}
    finally:
        server.stop()


def test_a_call_waiting_for_a_model_slot_is_refused_once_it_could_no_longer_finish_and_never_runs():
    """Under overload most waiting calls end this way, so the loop refuses them on its own timer,
    before their deadline, instead of a pool thread finding them hopeless between two runs."""
    ran: list[float] = []
    app = BlazeApp()

    @app.model("paced")
    def paced(x: float, seconds: float) -> float:
        ran.append(x)
        time.sleep(seconds)
        return x

    server = start_server(app, max_model_threads=1, inline_budget_us=0)
    pb2, rpc = _stubs(server)
    try:
        with grpc.insecure_channel(server.address) as channel, concurrent.futures.ThreadPoolExecutor(2) as pool:
            stub = rpc.InferenceServiceStub(channel)
            for _ in range(5):  # the model's mean call time becomes ~0.2 s
                assert stub.PredictPaced(pb2.PacedRequest(x=0.0, seconds=0.2), timeout=10).result == 0.0
            busy = pool.submit(stub.PredictPaced, pb2.PacedRequest(x=1.0, seconds=2.5), timeout=20)
            give_up = time.monotonic() + 10
            while ran[-1:] != [1.0] and time.monotonic() < give_up:
                time.sleep(0.01)
            assert ran[-1:] == [1.0], "the long call never started"
            with pytest.raises(grpc.RpcError) as refused:
                stub.PredictPaced(pb2.PacedRequest(x=2.0, seconds=0.2), timeout=1.0)
            assert refused.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            # The server's refusal (about 0.25 s before the deadline), not the client's own timer.
            assert "too close to finish" in (refused.value.details() or "")
            assert busy.result().result == 1.0
        assert 2.0 not in ran
    finally:
        server.stop()
