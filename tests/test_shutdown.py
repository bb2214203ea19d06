"""Draining: shutting down under load loses no accepted request."""

from __future__ import annotations

import threading
import time

import grpc

from blazerpc_core import BlazeApp
from blazerpc_core.testing import compile_stubs, start_server


def test_shutdown_under_load_loses_no_accepted_request():
    app = BlazeApp()
    started = threading.Semaphore(0)

    @app.model("work")
    def work(x: int) -> int:
        started.release()
        time.sleep(0.05)
        return x * 2

    server = start_server(app, grace_period=30)
    stubs = compile_stubs(server.proto_text)
    outcomes: list[tuple[int, grpc.StatusCode, int | None]] = []
    lock = threading.Lock()

    def client(worker: int) -> None:
        with grpc.insecure_channel(server.address) as channel:
            stub = stubs.pb2_grpc.InferenceServiceStub(channel)
            # Each client calls until the server refuses it (bounded: the server is stopped below).
            for i in range(5000):
                x = worker * 10_000 + i
                try:
                    reply = stub.PredictWork(stubs.pb2.WorkRequest(x=x), timeout=30)
                    outcome = (x, grpc.StatusCode.OK, reply.result)
                except grpc.RpcError as exc:
                    outcome = (x, exc.code(), None)
                with lock:
                    outcomes.append(outcome)
                if outcome[1] is not grpc.StatusCode.OK:
                    return

    clients = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for thread in clients:
        thread.start()
    for _ in range(40):  # let a steady load build up
        assert started.acquire(timeout=30)
    server.stop()
    for thread in clients:
        thread.join(60)

    codes = {code for _, code, _ in outcomes}
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    assert all(result == x * 2 for x, code, result in outcomes if code is grpc.StatusCode.OK)
    assert sum(code is grpc.StatusCode.OK for _, code, _ in outcomes) >= 40
    # Every client ended on a refusal: the server stopped while they were still calling.
    assert sum(code is grpc.StatusCode.UNAVAILABLE for _, code, _ in outcomes) == len(clients)
