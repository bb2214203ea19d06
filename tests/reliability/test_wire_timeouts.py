"""Connections that never speak, go quiet, or never send their request; and the connection cap.

Measured before: 300 idle connections used up the server's file descriptors and locked
every other client out; nothing ever closed them.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from blazerpc_core import BlazeApp
from blazerpc_core.testing import compile_stubs, start_server
from tests.reliability.wire_client import NO_ERROR, PREFACE, RawH2, grpc_frame

UNARY = "/blazerpc.InferenceService/PredictDouble"
CLIENT_STREAM = "/blazerpc.InferenceService/PredictTotal"
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


def make_app() -> BlazeApp:
    app = BlazeApp()

    @app.model("double")
    def double(x: int) -> int:
        return 2 * x

    @app.model("total")
    async def total(xs: AsyncIterator[int]) -> int:
        return sum([x async for x in xs])

    return app


def closed_within(sock: socket.socket, timeout: float) -> float:
    """Seconds until the server closes ``sock`` (reading and dropping what it sends); fail after ``timeout``."""
    started = time.monotonic()
    sock.settimeout(0.1)
    while time.monotonic() - started < timeout:
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    raise AssertionError(f"the server kept the connection open for over {timeout}s")


def test_a_connection_that_never_completes_the_handshake_is_closed() -> None:
    server = start_server(make_app(), handshake_timeout=0.5)
    try:
        silent = socket.create_connection(("127.0.0.1", server.port))
        preface_only = socket.create_connection(("127.0.0.1", server.port))
        preface_only.sendall(PREFACE)  # no SETTINGS frame follows
        with RawH2(server.address) as good:
            assert 0.3 < closed_within(silent, 5) < 2.5
            assert closed_within(preface_only, 5) < 2.5
            # A connection that finished its handshake is not affected.
            good.pump(0.2)
            assert not good.closed
            stream_id = good.unary(UNARY, b"\x08\x05")
            assert good.response(stream_id).grpc_status == 0
        silent.close()
        preface_only.close()
    finally:
        server.stop(grace_period=5)


def _self_signed(directory: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_a_tls_handshake_that_never_finishes_is_closed(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server = start_server(make_app(), handshake_timeout=0.5, tls_cert=cert, tls_key=key)
    try:
        silent = socket.create_connection(("127.0.0.1", server.port))
        assert closed_within(silent, 5) < 2.5
        silent.close()
        # After TLS, the HTTP/2 preface is still due within the same timeout.
        context = ssl.create_default_context(cafile=cert)
        context.set_alpn_protocols(["h2"])
        with context.wrap_socket(socket.create_connection(("127.0.0.1", server.port)),
                                 server_hostname="localhost") as tls:
            assert closed_within(tls, 5) < 2.5
        wire = server.server.wire
        assert wire is not None
        deadline = time.monotonic() + 5
        while wire.stats().connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert wire.stats().connections == 0
    finally:
        server.stop(grace_period=5)


def test_an_idle_connection_gets_goaway_and_is_closed_but_a_busy_one_is_not() -> None:
    server = start_server(make_app(), idle_timeout=0.5)
    try:
        with RawH2(server.address) as idle, RawH2(server.address) as busy:
            assert idle.response(idle.unary(UNARY, b"\x08\x02")).grpc_status == 0
            stream_id = busy.request(CLIENT_STREAM)  # open, and quiet, for longer than the idle timeout
            started = time.monotonic()
            took = idle.wait_closed(5)
            assert [g.error_code for g in idle.goaways] == [NO_ERROR]
            assert idle.goaways[0].last_stream_id == 1
            assert 0.2 < took < 2.5
            while time.monotonic() - started < 1.2:
                busy.pump(0.1)
            assert not busy.closed and not busy.goaways
            busy.send_data(stream_id, grpc_frame(b"\x08\x07"), end_stream=True)
            assert busy.response(stream_id).grpc_status == 0
            # Once its last call is over, the idle clock starts again.
            assert busy.wait_closed(5) < 2.5
    finally:
        server.stop(grace_period=5)


def test_the_request_of_a_unary_call_must_arrive_within_the_first_message_timeout() -> None:
    server = start_server(make_app(), first_message_timeout=0.5)
    try:
        with RawH2(server.address) as client:
            no_body = client.request(UNARY)
            half = client.request(UNARY)
            client.send_data(half, struct.pack(">?I", False, 100) + b"\x08")  # 1 of 100 bytes
            streaming = client.request(CLIENT_STREAM)  # client streams may take their time
            started = time.monotonic()
            for stream_id in (no_body, half):
                response = client.response(stream_id)
                assert response.grpc_status == DEADLINE_EXCEEDED, response.grpc_message
                assert "--first-message-timeout" in response.grpc_message
            assert 0.3 < time.monotonic() - started < 2.5
            time.sleep(0.5)
            client.send_data(streaming, grpc_frame(b"\x08\x03"), end_stream=True)
            assert client.response(streaming).grpc_status == 0
            assert client.response(client.unary(UNARY, b"\x08\x01")).grpc_status == 0
    finally:
        server.stop(grace_period=5)


def test_connections_over_the_cap_are_closed_at_once_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="blazerpc.server")
    server = start_server(make_app(), max_connections=2)
    stubs = compile_stubs(server.proto_text)
    try:
        first, second = RawH2(server.address), RawH2(server.address)
        for _ in range(5):
            with RawH2(server.address, handshake=False) as over:
                assert over.wait_closed(2) < 1.0
                assert over.goaways and over.goaways[0].additional_data == b"connection limit reached"
        for client in (first, second):
            assert client.response(client.unary(UNARY, b"\x08\x03")).grpc_status == 0
        refusals = [r for r in caplog.records if "--max-connections" in r.getMessage()]
        assert len(refusals) == 1, [r.getMessage() for r in refusals]
        wire = server.server.wire
        assert wire is not None and wire.stats().refused_connections == 5
        # A slot that frees up is usable again.
        first.close()
        deadline = time.monotonic() + 5
        while wire.stats().connections > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        with grpc.insecure_channel(server.address) as channel:
            stub = stubs.pb2_grpc.InferenceServiceStub(channel)
            assert stub.PredictDouble(stubs.pb2.DoubleRequest(x=4), timeout=5).result == 8
        second.close()
    finally:
        server.stop(grace_period=5)


def test_a_slow_request_within_its_deadline_is_not_cut_by_the_idle_timeout() -> None:
    """The idle clock only runs while no call is open, whatever the call is waiting for."""
    app = BlazeApp()
    release = threading.Event()

    @app.model("wait")
    async def wait(x: int) -> int:
        while not release.is_set():
            await asyncio.sleep(0.01)
        return x

    server = start_server(app, idle_timeout=0.3)
    stubs = compile_stubs(server.proto_text)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = stubs.pb2_grpc.InferenceServiceStub(channel)
            future = stub.PredictWait.future(stubs.pb2.WaitRequest(x=9), timeout=10)
            time.sleep(1.0)
            release.set()
            assert future.result().result == 9
    finally:
        release.set()
        server.stop(grace_period=5)
