"""Sync models: off the loop by default; consistently cheap ones promoted inline, demoted when slow."""

from __future__ import annotations

import threading
import time

import pytest

from blazerpc_core import BlazeApp
from blazerpc_core.runtime.executor import DEMOTE_WINDOW, PROMOTE_AFTER, ModelPool


def _work_app(threads: list[str]) -> BlazeApp:
    app = BlazeApp()

    @app.model("work")
    def work(sleep_ms: float) -> float:
        threads.append(threading.current_thread().name)
        if sleep_ms:
            time.sleep(sleep_ms / 1000)  # waiting, not CPU: only wall time on the loop shows it
        return sleep_ms

    return app


def test_a_cheap_model_is_promoted_and_a_window_of_slow_calls_demotes_it(blazerpc_serve, blazerpc_connect):
    threads: list[str] = []
    # A generous budget (20 ms) makes the test deterministic on a busy machine.
    conn = blazerpc_connect(blazerpc_serve(_work_app(threads), inline_budget_us=20_000))
    call = lambda ms: conn.stub.PredictWork(conn.pb2.WorkRequest(sleep_ms=ms), timeout=10)
    for _ in range(PROMOTE_AFTER):
        call(0)
    assert all(name.startswith("blazerpc-model") for name in threads)
    call(0)
    assert threads[-1] == "blazerpc-test-server"  # the server's event loop thread
    call(30)  # one call over the budget is not enough to demote...
    call(0)
    assert threads[-1] == "blazerpc-test-server"
    for _ in range(DEMOTE_WINDOW):  # ...but a window where most calls are slow is
        call(30)
    del threads[:]
    for _ in range(5):
        call(0)
    assert all(name.startswith("blazerpc-model") for name in threads)


def test_two_stalls_in_a_row_demote_and_the_next_probation_is_twice_as_long(blazerpc_serve, blazerpc_connect):
    """One stall is forgiven (a preemption or a garbage collection looks the same); a second soon after is not."""
    threads: list[str] = []
    conn = blazerpc_connect(blazerpc_serve(_work_app(threads), inline_budget_us=5_000))
    call = lambda ms: conn.stub.PredictWork(conn.pb2.WorkRequest(sleep_ms=ms), timeout=10)
    for _ in range(PROMOTE_AFTER + 1):
        call(0)
    assert threads[-1] == "blazerpc-test-server"
    call(80)  # over ten times the budget, once
    call(0)
    assert threads[-1] == "blazerpc-test-server"
    call(80)  # and again soon after: the next call goes to the pool
    del threads[:]
    for _ in range(2 * PROMOTE_AFTER):
        call(0)
    assert all(name.startswith("blazerpc-model") for name in threads)
    call(0)
    assert threads[-1] == "blazerpc-test-server"


def test_a_model_that_waits_is_never_promoted_though_it_uses_no_cpu(blazerpc_serve, blazerpc_connect):
    """Sleeping (or waiting on I/O) costs no CPU, but the clock shows it: the loop never runs it."""
    threads: list[str] = []
    conn = blazerpc_connect(blazerpc_serve(_work_app(threads), inline_budget_us=5_000))
    call = lambda ms: conn.stub.PredictWork(conn.pb2.WorkRequest(sleep_ms=ms), timeout=10)
    for _ in range(PROMOTE_AFTER + 5):
        call(3)  # 3 ms of sleep: nearly no CPU, yet more than half the budget by the clock
    assert all(name.startswith("blazerpc-model") for name in threads)


def test_inline_budget_zero_always_uses_the_pool(blazerpc_serve, blazerpc_connect):
    app = BlazeApp()
    threads: list[str] = []

    @app.model("work")
    def work(x: int) -> int:
        threads.append(threading.current_thread().name)
        return x

    conn = blazerpc_connect(blazerpc_serve(app, inline_budget_us=0))
    for i in range(PROMOTE_AFTER + 20):
        assert conn.stub.PredictWork(conn.pb2.WorkRequest(x=i), timeout=10).result == i
    assert all(name.startswith("blazerpc-model") for name in threads)


def test_a_pool_answering_calls_one_after_another_uses_one_thread():
    """The thread is idle before its answer wakes the caller, so the next call finds it instead of starting one."""
    pool = ModelPool(8, name="one-at-a-time")
    try:
        for i in range(300):
            assert pool.submit(lambda x: x, i).result(timeout=10) == i
        assert [t.name for t in threading.enumerate() if t.name.startswith("one-at-a-time")] == ["one-at-a-time-1"]
    finally:
        pool.shutdown()


def test_calls_waiting_for_a_model_slot_are_cancelled_when_a_shutdown_drops_them():
    """A shutdown drops pool work not yet started; a model's calls waiting behind it must end too,
    not wait forever on a future nobody will complete."""
    from blazerpc_core.runtime.executor import ModelBacklog

    pool = ModelPool(1)
    release = threading.Event()
    pool.submit(release.wait, 10)  # the pool's only thread is busy
    backlog = ModelBacklog(1, pool, lambda args, deadline: args[0])
    queued = backlog.submit((1,), None)  # in the pool's queue
    waiting = backlog.submit((2,), None)  # in the model's backlog
    pool.shutdown(cancel_futures=True)
    release.set()
    assert queued.cancelled() and waiting.cancelled()
    with pytest.raises(RuntimeError):  # and a closed pool refuses new calls at once
        backlog.submit((3,), None)


def test_a_model_slot_is_handed_to_the_next_waiting_call_in_order():
    from blazerpc_core.runtime.executor import ModelBacklog

    pool = ModelPool(4)
    ran: list[int] = []
    gate = threading.Event()

    def run(args: tuple[int], deadline: float | None) -> int:
        if args[0] == 0:
            gate.wait(10)
        ran.append(args[0])
        return args[0]

    backlog = ModelBacklog(1, pool, run)
    futures = [backlog.submit((i,), None) for i in range(4)]
    time.sleep(0.05)
    assert ran == []  # one slot: the rest wait behind the first call
    gate.set()
    assert [f.result(10) for f in futures] == [0, 1, 2, 3]
    assert ran == [0, 1, 2, 3]
    pool.shutdown()


def test_the_default_inline_budget_is_twice_the_measured_hop_from_100_us_to_1_ms():
    """A call goes inline when it costs less than the hop it avoids; slow hops (some VMs) raise the budget."""
    import asyncio

    from blazerpc_core.runtime.executor import auto_inline_budget, measure_hop

    pool = ModelPool(2)
    try:
        assert pool.hop_seconds is None and auto_inline_budget(pool) == 100e-6  # not measured: the floor
        hop = asyncio.run(measure_hop(pool))
        assert 0 < hop < 0.1 and pool.hop_seconds == hop
        assert auto_inline_budget(pool) == min(1e-3, max(100e-6, 2 * hop))
        for measured, budget in ((10e-6, 100e-6), (160e-6, 320e-6), (5e-3, 1e-3)):
            pool.hop_seconds = measured
            assert auto_inline_budget(pool) == pytest.approx(budget)
    finally:
        pool.shutdown()


def test_a_server_measures_its_pool_unless_the_budget_is_given(blazerpc_serve):
    from blazerpc_core.runtime.executor import auto_inline_budget

    def invokers(running):
        return [entry.runner.invoker for entry in running.server.host.all_entries()]

    measured = blazerpc_serve(_work_app([]))
    pool = measured.server.context.pool
    assert pool.hop_seconds is not None and pool.hop_seconds > 0
    assert [i.inline_budget for i in invokers(measured)] == [auto_inline_budget(pool)]

    given = blazerpc_serve(_work_app([]), inline_budget_us=250)
    assert given.server.context.pool.hop_seconds is None  # nothing to measure: the operator chose
    assert [i.inline_budget for i in invokers(given)] == [250e-6]
