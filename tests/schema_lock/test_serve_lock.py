"""Over real sockets: a client compiled from the old .proto, after a parameter is inserted in the middle.

With the lock it keeps getting correct answers; without it, its values silently land in
other fields, and the server says at start that its schema changed and how to lock it.
"""

from __future__ import annotations

import grpc

from blazerpc_core.testing import compile_stubs, run_cli, serve_cli
from tests.schema_lock.sources import SUB, SUB_INSERTED, write_app


def _call(server, stubs, **fields) -> float:
    with grpc.insecure_channel(server.address) as channel:
        stub = stubs.pb2_grpc.InferenceServiceStub(channel)
        return float(stub.PredictSub(stubs.pb2.SubRequest(**fields), timeout=10).result)


def test_an_old_client_keeps_correct_answers_with_the_lock_and_silently_wrong_ones_without(tmp_path):
    app = write_app(tmp_path / "app.py", SUB)
    lock = tmp_path / "blaze_service.lock"
    assert run_cli("proto", str(app), "--lock", str(lock), "-o", str(tmp_path)).returncode == 0
    old = compile_stubs((tmp_path / "blaze_service.proto").read_text(), tmp_path / "old_stubs")
    locked = lock.read_text()
    write_app(app, SUB_INSERTED)  # sub(a, offset, b): offset would take b's number 2

    with serve_cli(str(app), "--schema-lock", str(lock)) as server:
        assert _call(server, old, a=10, b=3) == 7  # 10 - 3 + offset 0
        output = server.output()
    assert "does not use it" not in output and "differs" not in output
    assert lock.read_text() == locked  # serve never writes the lock

    with serve_cli(str(app)) as server:
        # The old client's b=3 arrives as offset; b is 0: 10 - 0 + 3.
        assert _call(server, old, a=10, b=3) == 13
        output = server.output()
    assert f"a schema lock, {lock}, sits next to the models but this server does not use it" in output
    assert "BREAKING model 'sub' version '1' (rpc PredictSub) request: field 'b' moved from number 2 to 3" in output
    assert f"Keep field numbers stable: serve with --schema-lock {lock}" in output

    lock.unlink()  # only the exported .proto is left beside the model: compared through grpcio-tools
    with serve_cli(str(app)) as server:
        output = server.output()
    assert f"the served schema differs from {tmp_path / 'blaze_service.proto'}" in output
    assert "BREAKING model 'sub' version '1' (rpc PredictSub) request: new field 'offset' double takes number 2" in (
        output)
    assert "blazerpc proto TARGET --lock" in output


def test_the_lock_updates_with_proto_and_old_and_new_clients_both_work(tmp_path):
    app = write_app(tmp_path / "app.py", SUB)
    lock = tmp_path / "blaze_service.lock"
    assert run_cli("proto", str(app), "--lock", str(lock), "-o", str(tmp_path / "v1")).returncode == 0
    old = compile_stubs((tmp_path / "v1" / "blaze_service.proto").read_text(), tmp_path / "old_stubs")
    write_app(app, SUB_INSERTED)
    done = run_cli("proto", str(app), "--lock", str(lock), "-o", str(tmp_path / "v2"))
    assert done.returncode == 0, done.stderr
    assert "  field 3 offset double\n" in lock.read_text()
    assert "double offset = 3;" in (tmp_path / "v2" / "blaze_service.proto").read_text()
    new = compile_stubs((tmp_path / "v2" / "blaze_service.proto").read_text(), tmp_path / "new_stubs")
    with serve_cli(str(app), "--schema-lock", str(lock)) as server:
        assert _call(server, old, a=10, b=3) == 7
        assert _call(server, new, a=10, b=3, offset=100) == 107


def test_an_unchanged_schema_next_to_its_exported_proto_says_nothing(tmp_path):
    app = write_app(tmp_path / "app.py", SUB)
    assert run_cli("proto", str(app), "-o", str(tmp_path)).returncode == 0
    with serve_cli(str(app)) as server:
        output = server.output()
    assert "differs" not in output and "schema lock" not in output
