"""TLS, mutual TLS, tokens and API keys, and message size limits, through the client."""

from __future__ import annotations

import os
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status

from blazerpc_core.client import CallError, Client, RetryPolicy
from tests.client.client_apps import NOT_RETRIED, SLOW_RETRY, TIMEOUT, streaming_app
from tests.test_tls import Pki, issue, make_ca

TOKEN = "client-test-token-0123456789"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: Any) -> Pki:
    ca, ca_cert, ca_key = make_ca("client test CA")
    _, other_cert, other_key = make_ca("untrusted CA")
    pki = Pki(ca=ca, server=issue(ca_cert, ca_key, "localhost", server=True),
              client=issue(ca_cert, ca_key, "client", server=False),
              stranger=issue(other_cert, other_key, "stranger", server=False), files={})
    directory: Path = tmp_path_factory.mktemp("client-pki")
    for name, data in (("ca.pem", pki.ca.cert), ("server.pem", pki.server.cert), ("server.key", pki.server.key),
                       ("client.pem", pki.client.cert), ("client.key", pki.client.key),
                       ("stranger.pem", pki.stranger.cert), ("stranger.key", pki.stranger.key)):
        (directory / name).write_bytes(data)
        pki.files[name] = str(directory / name)
    return pki


def test_tls_with_a_ca_file_or_an_ssl_context(blazerpc_serve: Any, pki: Pki) -> None:
    server = blazerpc_serve(streaming_app(), tls_cert=pki.files["server.pem"], tls_key=pki.files["server.key"])
    with Client(server.address, timeout=TIMEOUT, ca_file=pki.files["ca.pem"]) as client:
        assert client.call("whoami", x=1) == "server"
    context = ssl.create_default_context(cafile=pki.files["ca.pem"])
    context.set_alpn_protocols(["h2"])
    with Client(server.address, timeout=TIMEOUT, tls=context) as client:
        assert client.call("whoami", x=1) == "server"
    # The server's name may be checked against another address (a proxy, a DNS alias).
    with Client(server.address, timeout=TIMEOUT, ca_file=pki.files["ca.pem"], server_name="localhost") as client:
        assert client.call("whoami", x=1) == "server"


def test_an_untrusted_server_fails_at_once_without_retries(blazerpc_serve: Any, pki: Pki) -> None:
    server = blazerpc_serve(streaming_app(), tls_cert=pki.files["server.pem"], tls_key=pki.files["server.key"])
    with Client(server.address, timeout=TIMEOUT, ca_file=pki.files["stranger.pem"], retry=SLOW_RETRY) as client:
        started = time.monotonic()
        with pytest.raises(CallError) as info:
            client.call("whoami", x=1)
        assert info.value.status is Status.UNAVAILABLE and "TLS" in info.value.message
        assert time.monotonic() - started < NOT_RETRIED
    with Client(server.address, timeout=2, retry=RetryPolicy(max_attempts=1)) as plaintext:
        with pytest.raises(CallError) as info:
            plaintext.call("whoami", x=1)
        assert info.value.status in (Status.UNAVAILABLE, Status.UNKNOWN, Status.DEADLINE_EXCEEDED)


def test_mutual_tls(blazerpc_serve: Any, pki: Pki) -> None:
    server = blazerpc_serve(streaming_app(), tls_cert=pki.files["server.pem"], tls_key=pki.files["server.key"],
                            tls_client_ca=pki.files["ca.pem"])
    with Client(server.address, timeout=TIMEOUT, ca_file=pki.files["ca.pem"], cert_file=pki.files["client.pem"],
                key_file=pki.files["client.key"]) as client:
        assert client.call("whoami", x=1) == "server"
        assert client.health() == "SERVING"
    for cert in (None, "stranger"):
        options = {} if cert is None else {"cert_file": pki.files[f"{cert}.pem"], "key_file": pki.files[f"{cert}.key"]}
        with Client(server.address, timeout=TIMEOUT, ca_file=pki.files["ca.pem"], **options) as client:
            with pytest.raises(CallError) as info:
                client.call("whoami", x=1)
            assert info.value.status is Status.UNAVAILABLE


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"tester {TOKEN}\n")
    os.chmod(path, 0o600)
    return path


def test_bearer_token_and_api_key(blazerpc_serve: Any, tokens_file: Path) -> None:
    server = blazerpc_serve(streaming_app(), extra={"auth_tokens_file": str(tokens_file)})
    with Client(server.address, timeout=TIMEOUT, token=TOKEN) as client:
        assert client.call("whoami", x=1) == "server"
        assert list(client.stream("generate", prompt="p", n=1)) == ["p-0"]
    with Client(server.address, timeout=TIMEOUT, api_key=TOKEN) as client:
        assert client.call("whoami", x=1) == "server"
    with Client(server.address, timeout=TIMEOUT, retry=SLOW_RETRY) as client:
        started = time.monotonic()
        with pytest.raises(CallError) as info:
            client.call("whoami", x=1)
        assert info.value.status is Status.UNAUTHENTICATED
        assert time.monotonic() - started < NOT_RETRIED
    with Client(server.address, timeout=TIMEOUT, token="wrong-token-0123456789") as client:
        with pytest.raises(CallError) as info:
            client.call("whoami", x=1)
        assert info.value.status is Status.UNAUTHENTICATED
        # Per-call metadata adds headers (here, one the server ignores).
        with pytest.raises(CallError):
            client.call("whoami", x=1, metadata={"x-trace": "1"})


def test_message_size_limits(blazerpc_serve: Any) -> None:
    server = blazerpc_serve(streaming_app(), max_message_mb=1.0)
    big = 2 * 1024 * 1024
    with Client(server.address, timeout=TIMEOUT, retry=SLOW_RETRY) as client:
        assert len(client.call("blob", size=big)) == big  # 64 MB by default, as the server's default
        started = time.monotonic()
        with pytest.raises(CallError) as info:
            list(client.stream("generate", prompt="x" * big, n=1))
        # The server refuses requests over its --max-message-mb, and would again: not retried.
        assert info.value.status is Status.RESOURCE_EXHAUSTED and info.value.address == server.address
        assert time.monotonic() - started < NOT_RETRIED
    with Client(server.address, timeout=TIMEOUT, max_receive_mb=1.0, max_send_mb=0.5, retry=SLOW_RETRY) as client:
        started = time.monotonic()
        with pytest.raises(CallError) as info:
            client.call("blob", size=big)
        assert info.value.status is Status.RESOURCE_EXHAUSTED and "max_receive_mb" in info.value.message
        with pytest.raises(CallError) as info:
            list(client.stream("generate", prompt="x" * big, n=1))
        assert info.value.status is Status.RESOURCE_EXHAUSTED and "max_send_mb" in info.value.message
        assert time.monotonic() - started < 2 * NOT_RETRIED  # client-side limits are final, not retried
        assert client.call("blob", size=10) == b"x" * 10
