"""Sync models: off the loop by default; consistently tiny ones promoted inline, demoted for good when slow."""

from __future__ import annotations

import threading
import time

from blazerpc_core import BlazeApp
from blazerpc_core.runtime.executor import PROMOTE_AFTER


def test_fast_sync_model_is_promoted_inline_and_a_slow_call_demotes_it(blazerpc_serve, blazerpc_connect):
    app = BlazeApp()
    threads: list[str] = []

    @app.model("work")
    def work(sleep_ms: float) -> float:
        threads.append(threading.current_thread().name)
        if sleep_ms:
            time.sleep(sleep_ms / 1000)
        return sleep_ms

    server = blazerpc_serve(app, inline_budget_us=100_000)  # a generous budget makes the test deterministic
    conn = blazerpc_connect(server)
    call = lambda ms: conn.stub.PredictWork(conn.pb2.WorkRequest(sleep_ms=ms), timeout=10)
    for _ in range(PROMOTE_AFTER):
        call(0)
    assert all(name.startswith("blazerpc-model") for name in threads)
    call(0)
    assert threads[-1] == "blazerpc-test-server"  # the server's event loop thread
    call(150)  # over budget: runs inline one last time, then demoted
    for _ in range(PROMOTE_AFTER + 5):
        call(0)
    assert all(name.startswith("blazerpc-model") for name in threads[-PROMOTE_AFTER - 5 :])


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
