"""Per-client rate limiting: kicks in, hints when to retry, recovers, and keys clients apart."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest

from blazerpc_core import RegistrationError
from blazerpc_core.security.ratelimit import TokenBuckets
from blazerpc_core.testing import Connection
from tests.apps import add_app

TIMEOUT = 10


def caller(conn: Connection) -> Any:
    def call(*metadata: tuple[str, str]) -> Any:
        return conn.stub.PredictAdd(conn.pb2.AddRequest(a=1, b=1), metadata=metadata, timeout=TIMEOUT)

    return call


def test_limit_kicks_in_with_retry_hint_and_recovers(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    server = blazerpc_serve(add_app(), extra={"rate_limit": 5.0, "rate_burst": 2})
    call = caller(blazerpc_connect(server))
    assert call().result == call().result == 2
    with pytest.raises(grpc.RpcError) as info:
        call()
    error = info.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate limit of 5 calls/s (burst 2) exceeded" in (error.details() or "")
    retry_ms = int(dict(error.trailing_metadata())["retry-after-ms"])
    assert 0 < retry_ms <= 200  # one token every 200 ms
    # Waiting as long as the server said is enough (bounded: at most 0.2 s).
    time.sleep(retry_ms / 1000.0)
    assert call().result == 2


def test_each_api_key_has_its_own_bucket(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    server = blazerpc_serve(add_app(), extra={"rate_limit": 0.01, "rate_burst": 1})
    call = caller(blazerpc_connect(server))
    assert call(("x-api-key", "client-a")).result == 2
    with pytest.raises(grpc.RpcError) as info:
        call(("x-api-key", "client-a"))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Another client is not held back by client-a's empty bucket ...
    assert call(("authorization", "Bearer client-b")).result == 2
    # ... and a client without a key counts against its address.
    assert call().result == 2
    with pytest.raises(grpc.RpcError):
        call()


def test_with_auth_the_key_is_the_credential(
    blazerpc_serve: Any, blazerpc_connect: Any, monkeypatch: Any
) -> None:
    token = "rate-token-0123456789abcdef"
    monkeypatch.setenv("BLAZERPC_AUTH_TOKENS", token)
    server = blazerpc_serve(add_app(), extra={"rate_limit": 0.01, "rate_burst": 1})
    call = caller(blazerpc_connect(server))
    assert call(("x-api-key", token)).result == 2
    with pytest.raises(grpc.RpcError) as info:
        call(("authorization", f"Bearer {token}"))  # same credential, other header
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as info:
        call(("x-api-key", "made-up"))  # inventing keys does not buy a fresh bucket
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_off_unless_configured(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    server = blazerpc_serve(add_app())
    call = caller(blazerpc_connect(server))
    assert all(call().result == 2 for _ in range(30))


def test_configuration_errors(blazerpc_serve: Any) -> None:
    with pytest.raises(RegistrationError, match="--rate-burst needs --rate-limit"):
        blazerpc_serve(add_app(), extra={"rate_burst": 3})
    with pytest.raises(RegistrationError, match="must be positive"):
        blazerpc_serve(add_app(), extra={"rate_limit": 0.0})


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_refill_arithmetic() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.5)
    clock.now += 0.25
    assert buckets.take("k") == pytest.approx(0.25)
    clock.now += 0.25
    assert buckets.take("k") == 0.0
    clock.now += 60  # refills to the burst, never beyond
    assert [buckets.take("k") for _ in range(4)][-1] == pytest.approx(0.5)


def test_bucket_table_stays_bounded() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=1.0, burst=1, max_clients=100, clock=clock)
    for i in range(1000):
        buckets.take(f"client-{i}")
        assert len(buckets) <= 100
    # Buckets that refilled completely are dropped first, and forgetting them is harmless.
    clock.now += 5
    assert buckets.take("client-999") == 0.0
