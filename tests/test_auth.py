"""Token authentication over a real server: accepted, rejected, exempt, allow lists, config errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from blazerpc_core import BlazeApp, RegistrationError
from blazerpc_core.security.auth import TokenChecker, parse_token_file
from blazerpc_core.testing import Connection
from tests.apps import add_app

TIMEOUT = 10
ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef"


def make_app() -> BlazeApp:
    app = add_app()

    @app.model("secret")
    def secret(x: int) -> int:
        return x * 2

    return app


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# name token [models]\nalice {ALICE}\nbob {BOB} add   # bob may only add\n")
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def server(blazerpc_serve: Any, blazerpc_connect: Any, tokens_file: Path) -> tuple[Any, Connection]:
    srv = blazerpc_serve(make_app(), extra={"auth_tokens_file": str(tokens_file)})
    return srv, blazerpc_connect(srv)


def add(conn: Connection, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    return conn.stub.PredictAdd(conn.pb2.AddRequest(a=1, b=2), metadata=metadata, timeout=TIMEOUT)


def failure(fn: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    return info.value


def test_bearer_token_and_api_key_are_accepted(server: Any) -> None:
    _, conn = server
    assert add(conn, metadata=(("authorization", f"Bearer {ALICE}"),)).result == 3
    assert add(conn, metadata=(("authorization", f"bearer {BOB}"),)).result == 3
    assert add(conn, metadata=(("x-api-key", ALICE),)).result == 3


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", f"Basic {ALICE}"),),
        (("authorization", "Bearer "),),
        (("x-api-key", "not-a-token"),),
        (("x-api-key", ALICE[:-1]),),
        (("x-api-key", ALICE + "x"),),
        (("authorization", f"Bearer {ALICE} extra"),),
    ],
    ids=["none", "basic-scheme", "empty-bearer", "unknown-key", "prefix", "longer", "trailing-junk"],
)
def test_missing_or_wrong_credentials_are_unauthenticated(server: Any, metadata: Any) -> None:
    _, conn = server
    error = failure(add, conn, metadata=metadata)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "credentials" in (error.details() or "")
    assert dict(error.trailing_metadata())["www-authenticate"] == "Bearer"


def test_allow_list_answers_permission_denied(server: Any) -> None:
    _, conn = server
    request = conn.pb2.SecretRequest(x=4)
    assert conn.stub.PredictSecret(request, metadata=(("x-api-key", ALICE),), timeout=TIMEOUT).result == 8
    error = failure(conn.stub.PredictSecret, request, metadata=(("x-api-key", BOB),), timeout=TIMEOUT)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'bob' may not call model 'secret'" in (error.details() or "")


def test_undecodable_request_without_token_is_unauthenticated_first(server: Any) -> None:
    """Auth answers before the server says anything about the request body."""
    srv, _ = server
    with grpc.insecure_channel(srv.address) as channel:
        raw = channel.unary_unary("/blazerpc.InferenceService/PredictAdd")
        error = failure(raw, b"\xff\xff\xff", timeout=TIMEOUT)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        error = failure(raw, b"\xff\xff\xff", metadata=(("x-api-key", ALICE),), timeout=TIMEOUT)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def list_services(channel: grpc.Channel, *metadata: tuple[str, str]) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (response,) = stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=TIMEOUT)
    return [s.name for s in response.list_services_response.service]


def test_health_and_reflection_are_exempt_by_default(server: Any) -> None:
    srv, _ = server
    with grpc.insecure_channel(srv.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        assert "blazerpc.InferenceService" in list_services(channel)


def test_all_services_option_guards_health_too(
    blazerpc_serve: Any, blazerpc_connect: Any, tokens_file: Path
) -> None:
    srv = blazerpc_serve(make_app(), extra={"auth_tokens_file": str(tokens_file), "auth_all_services": True})
    with grpc.insecure_channel(srv.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        error = failure(health.Check, request, timeout=TIMEOUT)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        error = failure(health.Check, request, metadata=(("x-api-key", "wrong"),), timeout=TIMEOUT)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = health.Check(request, metadata=(("authorization", f"Bearer {BOB}"),), timeout=TIMEOUT)
        assert ok.status == health_pb2.HealthCheckResponse.SERVING
        assert failure(list_services, channel).code() == grpc.StatusCode.UNAUTHENTICATED
        assert "blazerpc.InferenceService" in list_services(channel, ("x-api-key", ALICE))
    # Inference still goes through the middleware, allow lists included.
    assert add(blazerpc_connect(srv), metadata=(("x-api-key", BOB),)).result == 3


def test_tokens_from_environment(blazerpc_serve: Any, blazerpc_connect: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("BLAZERPC_AUTH_TOKENS", f" {ALICE} , {BOB} ")
    conn = blazerpc_connect(blazerpc_serve(make_app()))
    assert add(conn, metadata=(("x-api-key", BOB),)).result == 3
    assert failure(add, conn).code() == grpc.StatusCode.UNAUTHENTICATED


def test_auth_is_off_without_tokens(blazerpc_serve: Any, blazerpc_connect: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("BLAZERPC_AUTH_TOKENS", raising=False)
    monkeypatch.delenv("BLAZERPC_AUTH_TOKENS_FILE", raising=False)
    assert add(blazerpc_connect(blazerpc_serve(make_app()))).result == 3


def test_disabling_auth_plugin_by_name(blazerpc_serve: Any, blazerpc_connect: Any, tokens_file: Path) -> None:
    srv = blazerpc_serve(make_app(), extra={"auth_tokens_file": str(tokens_file)}, disabled=["auth"])
    assert add(blazerpc_connect(srv)).result == 3


def test_configuration_errors_fail_at_build_time(blazerpc_serve: Any, tmp_path: Path) -> None:
    with pytest.raises(RegistrationError, match="cannot read auth tokens file"):
        blazerpc_serve(make_app(), extra={"auth_tokens_file": str(tmp_path / "missing")})
    bad = tmp_path / "bad"
    bad.write_text("ok-token-0123456789\na b c d\n")
    with pytest.raises(RegistrationError, match=r"bad:2: expected"):
        blazerpc_serve(make_app(), extra={"auth_tokens_file": str(bad)})
    dup = tmp_path / "dup"
    dup.write_text(f"one {ALICE}\ntwo {ALICE}\n")
    with pytest.raises(RegistrationError, match="same auth token"):
        blazerpc_serve(make_app(), extra={"auth_tokens_file": str(dup)})
    with pytest.raises(RegistrationError, match="--auth-all-services needs tokens"):
        blazerpc_serve(make_app(), extra={"auth_all_services": True})


def test_checker_matches_exactly_and_never_keeps_tokens_in_clear() -> None:
    credentials = parse_token_file(f"{ALICE}\nbob {BOB} add,secret\n", source="t")
    checker = TokenChecker(credentials)
    found = checker.identify(ALICE)
    assert found is not None and found.name.startswith("key-") and found.models is None
    bob = checker.identify(BOB)
    assert bob is not None and bob.models == frozenset({"add", "secret"})
    assert checker.identify(ALICE.upper()) is None and checker.identify("") is None
    assert all(ALICE.encode() not in repr(c).encode() for c in credentials)
