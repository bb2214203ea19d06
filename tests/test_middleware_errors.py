"""Error mapping: model exceptions → gRPC statuses (app, operator and built-in maps; hidden details)."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from grpclib.const import Status

from blazerpc_core import BlazeApp, RegistrationError
from blazerpc_core.cli import make_cli
from blazerpc_core.defaults.error_map import parse_error_map
from blazerpc_core.testing import Connection

TIMEOUT = 10


class QuotaError(Exception):
    pass


ERRORS: dict[str, BaseException] = {
    "value": ValueError("x must be positive"),
    "key": KeyError("nope"),
    "index": IndexError("out of range"),
    "todo": NotImplementedError("not yet"),
    "timeout": TimeoutError("backend slow"),
    "runtime": RuntimeError("secret internals"),
    "quota": QuotaError("too much"),
}


def make_app(**options: Any) -> BlazeApp:
    app = BlazeApp(**options)

    @app.model("fail")
    def fail(kind: str) -> int:
        raise ERRORS[kind]

    return app


def statuses(conn: Connection, *kinds: str) -> dict[str, tuple[grpc.StatusCode, str]]:
    found = {}
    for kind in kinds:
        with pytest.raises(grpc.RpcError) as info:
            conn.stub.PredictFail(conn.pb2.FailRequest(kind=kind), timeout=TIMEOUT)
        found[kind] = (info.value.code(), info.value.details() or "")
    return found


def test_app_error_map_and_builtin_defaults(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    app = make_app(error_map={ValueError: "INVALID_ARGUMENT", LookupError: "NOT_FOUND", KeyError: Status.ABORTED})
    server = blazerpc_serve(app)
    found = statuses(blazerpc_connect(server), *ERRORS)
    assert found["value"] == (grpc.StatusCode.INVALID_ARGUMENT, "ValueError: x must be positive")
    # The most specific mapped class wins, whatever the order of the mapping.
    assert found["key"][0] == grpc.StatusCode.ABORTED
    assert found["index"] == (grpc.StatusCode.NOT_FOUND, "IndexError: out of range")
    assert found["todo"][0] == grpc.StatusCode.UNIMPLEMENTED
    assert found["timeout"][0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert found["runtime"][0] == grpc.StatusCode.INTERNAL and "secret internals" in found["runtime"][1]


def test_precedence_app_over_operator_over_defaults(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    app = make_app(error_map={NotImplementedError: "FAILED_PRECONDITION"})
    operator = ("ValueError=OUT_OF_RANGE", "NotImplementedError=ABORTED", "TimeoutError=UNAVAILABLE",
                f"{__name__}:QuotaError=RESOURCE_EXHAUSTED")
    server = blazerpc_serve(app, extra={"error_map": operator})
    found = statuses(blazerpc_connect(server), "value", "todo", "timeout", "quota")
    assert found["value"][0] == grpc.StatusCode.OUT_OF_RANGE
    assert found["todo"][0] == grpc.StatusCode.FAILED_PRECONDITION
    assert found["timeout"][0] == grpc.StatusCode.UNAVAILABLE
    assert found["quota"] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QuotaError: too much")


def test_hidden_details_keep_mapped_messages_only(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    server = blazerpc_serve(make_app(error_map={ValueError: "INVALID_ARGUMENT"}), hide_error_details=True)
    found = statuses(blazerpc_connect(server), "runtime", "value")
    assert found["runtime"] == (grpc.StatusCode.INTERNAL, "model 'fail' version '1' failed; see the server log")
    assert found["value"] == (grpc.StatusCode.INVALID_ARGUMENT, "ValueError: x must be positive")


def test_disabling_error_map_plugin_drops_the_defaults(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    server = blazerpc_serve(make_app(), disabled=["error-map"])
    found = statuses(blazerpc_connect(server), "todo", "timeout")
    assert found["todo"][0] == found["timeout"][0] == grpc.StatusCode.INTERNAL


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({ValueError: "NOT_A_STATUS"}, "unknown gRPC status 'NOT_A_STATUS'"),
        ({"ValueError": "INVALID_ARGUMENT"}, "must be exception classes"),
        ({int: "INVALID_ARGUMENT"}, "must be exception classes"),
    ],
)
def test_bad_app_error_map_fails_where_the_app_is_made(mapping: Any, message: str) -> None:
    with pytest.raises(RegistrationError, match=message):
        BlazeApp(error_map=mapping)


def test_operator_entries_are_parsed_and_checked() -> None:
    assert parse_error_map(["json:JSONDecodeError=invalid_argument"]) == {
        json.JSONDecodeError: Status.INVALID_ARGUMENT
    }
    for entry, message in (
        ("ValueError", "expected"),
        ("NoSuchError=INTERNAL", "cannot find exception"),
        ("no_such_module:Error=INTERNAL", "cannot find exception"),
        ("json:dumps=INTERNAL", "not an exception class"),
        ("ValueError=TEAPOT", "unknown gRPC status"),
    ):
        with pytest.raises(RegistrationError, match=message):
            parse_error_map([entry])


def test_cli_rejects_a_bad_error_map_before_serving() -> None:
    result = CliRunner().invoke(make_cli(), ["serve", "app.py", "--error-map", "ValueError=TEAPOT"])
    assert result.exit_code == 2
    assert "unknown gRPC status 'TEAPOT'" in result.output


def test_two_apps_with_error_maps_serve_together(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    first = make_app(error_map={ValueError: "INVALID_ARGUMENT"})
    second = BlazeApp(error_map={ValueError: "INVALID_ARGUMENT", KeyError: "NOT_FOUND"})

    @second.model("other")
    def other(x: int) -> int:
        raise KeyError(x)

    conn = blazerpc_connect(blazerpc_serve([first, second]))
    assert statuses(conn, "value")["value"][0] == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        conn.stub.PredictOther(conn.pb2.OtherRequest(x=1), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
