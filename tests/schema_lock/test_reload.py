"""A reload that changes a model's signature keeps old clients working, with a lock file or without one.

Without a lock the running server remembers every number it has given, so a reload never
renumbers a field; with a lock, the lock's numbers hold and the lock file is not written.
"""

from __future__ import annotations

import threading

import grpc
import pytest

from blazerpc_core.schema.compat import BreakingChanges
from blazerpc_core.testing import compile_stubs, management_stubs, run_cli, start_server
from tests.schema_lock.sources import SUB, SUB_INSERTED, write_app

WITHOUT_B = """
@app.model("sub")
def sub(a: float, offset: float) -> float:
    return a + offset
"""
B_AS_TEXT = """
@app.model("sub")
def sub(a: float, offset: float, b: str) -> float:
    return a + offset
"""


def _sub(channel, stubs, **fields) -> float:
    stub = stubs.pb2_grpc.InferenceServiceStub(channel)
    return float(stub.PredictSub(stubs.pb2.SubRequest(**fields), timeout=10).result)


def test_without_a_lock_reloads_never_renumber_and_old_clients_keep_correct_answers(tmp_path):
    repo = tmp_path / "repo"
    model = write_app(repo / "sub.py", SUB)
    server = start_server(None, model_repository=str(repo), load_entry_points=False)
    try:
        old = compile_stubs(server.proto_text, tmp_path / "old")
        with grpc.insecure_channel(server.address) as channel:
            assert _sub(channel, old, a=10, b=3) == 7
            answers: list[float] = []
            stop = threading.Event()

            def keep_calling() -> None:
                with grpc.insecure_channel(server.address) as own:
                    while not stop.is_set():
                        answers.append(_sub(own, old, a=10, b=3))

            caller = threading.Thread(target=keep_calling)
            caller.start()
            write_app(model, SUB_INSERTED)
            server.run(server.server.host.reload("sub", None))
            stop.set()
            caller.join(30)
            assert answers and set(answers) == {7.0}  # before, during and after the swap
            assert "double offset = 3;" in server.proto_text and "double b = 2;" in server.proto_text
            assert _sub(channel, old, a=10, b=3) == 7

            write_app(model, WITHOUT_B)
            server.run(server.server.host.reload("sub", None))
            assert "  reserved 2;\n" in server.proto_text and '  reserved "b";\n' in server.proto_text
            assert _sub(channel, old, a=10, b=3) == 10  # b is ignored now, not read as offset

            write_app(model, SUB_INSERTED)  # b comes back with its type: its old number
            server.run(server.server.host.reload("sub", None))
            assert "double b = 2;" in server.proto_text and "reserved" not in server.proto_text
            assert _sub(channel, old, a=10, b=3) == 7

            write_app(model, B_AS_TEXT)
            with pytest.raises(BreakingChanges, match=r"field 'b' changed type double → string") as refused:
                server.run(server.server.host.reload("sub", None))
            assert "the field numbers this server has given since it started" in str(refused.value)
            assert _sub(channel, old, a=10, b=3) == 7  # the old instance still serves
    finally:
        server.stop()


def test_with_a_lock_a_reload_through_the_management_service_keeps_the_locked_numbers(tmp_path):
    repo = tmp_path / "repo"
    model = write_app(repo / "sub.py", SUB)
    lock = tmp_path / "blaze_service.lock"
    assert run_cli("proto", str(model), "--lock", str(lock), "-o", str(tmp_path / "v1")).returncode == 0
    locked = lock.read_text()
    old = compile_stubs((tmp_path / "v1" / "blaze_service.proto").read_text(), tmp_path / "old")
    mgmt = management_stubs(tmp_path / "mgmt")
    server = start_server(None, model_repository=str(repo), model_control="explicit", schema_lock=str(lock),
                          load_entry_points=False)
    try:
        with grpc.insecure_channel(server.address) as channel:
            manage = mgmt.pb2_grpc.ManagementServiceStub(channel)
            write_app(model, SUB_INSERTED)
            reloaded = manage.ReloadModel(mgmt.pb2.ModelRef(name="sub"), timeout=30)
            assert [m.state for m in reloaded.models] == ["READY"]
            assert _sub(channel, old, a=10, b=3) == 7
            assert "double offset = 3;" in server.proto_text
            write_app(model, B_AS_TEXT)
            with pytest.raises(grpc.RpcError) as refused:
                manage.ReloadModel(mgmt.pb2.ModelRef(name="sub"), timeout=30)
            assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "against schema lock" in refused.value.details()
            assert "field 'b' changed type double → string" in refused.value.details()
            assert _sub(channel, old, a=10, b=3) == 7
        assert lock.read_text() == locked
    finally:
        server.stop()
