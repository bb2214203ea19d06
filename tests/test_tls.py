"""TLS and mutual TLS with a CA made in the test and grpcio secure channels."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from blazerpc_core import RegistrationError
from tests.apps import add_app

TIMEOUT = 10


@dataclass
class Pem:
    cert: bytes
    key: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> tuple[Pem, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pem(_cert_pem(cert), _key_pem(key)), cert, key


def issue(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str, *, server: bool) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return Pem(_cert_pem(builder.sign(ca_key, hashes.SHA256())), _key_pem(key))


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Pki:
    ca: Pem
    server: Pem
    client: Pem
    stranger: Pem  # a client certificate from a CA the server does not trust
    files: dict[str, str]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: Any) -> Pki:
    ca, ca_cert, ca_key = make_ca("blazerpc test CA")
    _, other_cert, other_key = make_ca("someone else's CA")
    pki = Pki(
        ca=ca,
        server=issue(ca_cert, ca_key, "localhost", server=True),
        client=issue(ca_cert, ca_key, "test client", server=False),
        stranger=issue(other_cert, other_key, "stranger", server=False),
        files={},
    )
    directory: Path = tmp_path_factory.mktemp("pki")
    for name, data in (("ca.pem", pki.ca.cert), ("server.pem", pki.server.cert), ("server.key", pki.server.key)):
        (directory / name).write_bytes(data)
        pki.files[name] = str(directory / name)
    return pki


def add(address: str, stubs: Any, credentials: grpc.ChannelCredentials) -> float:
    with grpc.secure_channel(address, credentials) as channel:
        stub = stubs.pb2_grpc.InferenceServiceStub(channel)
        return float(stub.PredictAdd(stubs.pb2.AddRequest(a=1, b=2), timeout=TIMEOUT).result)


def test_tls(blazerpc_serve: Any, blazerpc_stubs: Any, pki: Pki) -> None:
    server = blazerpc_serve(add_app(), tls_cert=pki.files["server.pem"], tls_key=pki.files["server.key"])
    stubs = blazerpc_stubs(server)
    assert add(server.address, stubs, grpc.ssl_channel_credentials(root_certificates=pki.ca.cert)) == 3
    # A client that does not trust the server's CA refuses the connection.
    with pytest.raises(grpc.RpcError) as info:
        add(server.address, stubs, grpc.ssl_channel_credentials(root_certificates=pki.stranger.cert))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # Plaintext clients cannot talk to a TLS port.
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError):
        stubs.pb2_grpc.InferenceServiceStub(channel).PredictAdd(stubs.pb2.AddRequest(a=1, b=2), timeout=TIMEOUT)


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    blazerpc_serve: Any, blazerpc_stubs: Any, pki: Pki
) -> None:
    server = blazerpc_serve(
        add_app(), tls_cert=pki.files["server.pem"], tls_key=pki.files["server.key"],
        tls_client_ca=pki.files["ca.pem"],
    )
    stubs = blazerpc_stubs(server)
    trusted = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert, private_key=pki.client.key, certificate_chain=pki.client.cert
    )
    assert add(server.address, stubs, trusted) == 3
    for credentials in (
        grpc.ssl_channel_credentials(root_certificates=pki.ca.cert),  # no certificate at all
        grpc.ssl_channel_credentials(  # a certificate the server's CA did not sign
            root_certificates=pki.ca.cert, private_key=pki.stranger.key, certificate_chain=pki.stranger.cert
        ),
    ):
        with pytest.raises(grpc.RpcError) as info:
            add(server.address, stubs, credentials)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # Refused handshakes do not disturb the server: trusted clients still get answers.
    assert add(server.address, stubs, trusted) == 3


def test_tls_cert_without_key_is_refused(blazerpc_serve: Any, pki: Pki) -> None:
    with pytest.raises(RegistrationError, match="--tls-cert needs --tls-key"):
        blazerpc_serve(add_app(), tls_cert=pki.files["server.pem"])
