"""Probes of what a client can put in a request, each sent over a real socket to a real server.

Tried: a 200 000-dimension shape, a 1 MiB dtype string and a 1 MiB string a plugin's
converter quotes in its error (a short INVALID_ARGUMENT at once, while health keeps
answering); 100 000 dimensions of 2**62 on an any-rank tensor, rank 65, 64 huge dimensions,
empty tensors with unaddressable dimensions (all refused before any big multiplication) and
the largest empty ones that still fit; dtype strings numpy chokes on or reads differently
(sub-array and structured specs, aliases, byte-order prefixes, a big-endian float32 that
used to come back as 9.2e-41), with every allowed dtype round-tripping, and the same strings
through a plugin decoder that resolves names with numpy like the torch and TF plugins;
plugin converters raising at the top level, in a list and in a dataclass field; auth header values
with CR/LF, NUL, DEL and tabs sent raw over HTTP/2 (grpcio refuses to send them), and
padded or empty ones through grpcio.
"""

from __future__ import annotations

import dataclasses
import fractions
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import grpc
import h2.config
import h2.connection
import h2.events
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blazerpc_core import BlazeApp, TensorInput, TensorOutput, hookimpl
from blazerpc_core.schema.fields import FieldMapping, T
from blazerpc_core.schema.tensors import MAX_RANK, WIRE_DTYPES, TensorSpec, checked_payload, tensor_mapping
from blazerpc_core.testing import Stubs, array_from_proto, compile_stubs, start_server, tensor_proto

BAD = grpc.StatusCode.INVALID_ARGUMENT
TIMEOUT = 10
#: A bad request must be answered within this, and must not hold up health checks longer.
QUICK_S = 2.0
TOKEN = "probe-token-0123456789abcdef"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class FractionsAsStrings:
    """A third-party mapping whose converter raises ValueError on bad input, like docs/hooks.md's example."""

    @hookimpl
    def blazerpc_map_type(self, annotation: Any, context: Any) -> FieldMapping | None:
        if annotation is fractions.Fraction:
            return FieldMapping(T.TYPE_STRING, "fraction", decode=fractions.Fraction, encode=str)
        return None


class NumpyNamedTensor:
    """An annotation for a tensor decoded the way the torch and TF plugins decode theirs."""


class FrameworkLikeTensors:
    """Resolves the wire dtype with numpy, as framework plugins do, then uses the shared ``checked_payload``."""

    @hookimpl
    def blazerpc_map_type(self, annotation: Any, context: Any) -> FieldMapping | None:
        if annotation is NumpyNamedTensor:
            return tensor_mapping(context, TensorSpec(None, None), decode=self.decode, encode=str, batch=None)
        return None

    @staticmethod
    def decode(message: Any) -> str:
        dtype = np.dtype(message.dtype)  # numpy also takes ">f4", "f4", "float", and raises ValueError...
        shape, data = checked_payload(message, TensorSpec(None, None), dtype.name, dtype.itemsize)
        return f"{dtype.name}{shape}:{len(data)}"


@dataclasses.dataclass
class Price:
    amount: fractions.Fraction
    currency: str


def probe_app() -> BlazeApp:
    app = BlazeApp(plugins=[FractionsAsStrings(), FrameworkLikeTensors()])

    @app.model("classify")
    def classify(x: TensorInput[np.float32, "batch", 8]) -> TensorOutput[np.float32, "batch", 2]:
        return x[:, :2] * 2

    @app.model("echo")
    def echo(x: np.ndarray) -> np.ndarray:
        return x

    @app.model("halve")
    def halve(f: fractions.Fraction, fs: list[fractions.Fraction], price: Price) -> str:
        return str(sum([f, *fs, price.amount]) / 2)

    @app.model("frame")
    def frame(x: NumpyNamedTensor) -> str:
        return str(x)

    return app


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Any, Stubs]]:
    server = start_server(probe_app())
    try:
        yield server, compile_stubs(server.proto_text)
    finally:
        server.stop()


@pytest.fixture
def stub(served: tuple[Any, Stubs]) -> Iterator[tuple[Any, Any]]:
    server, stubs = served
    with grpc.insecure_channel(server.address) as channel:
        yield stubs.pb2, stubs.pb2_grpc.InferenceServiceStub(channel)


class HealthWatch:
    """Health checks in a loop on a channel of their own; ``worst`` is the longest wait for an answer.

    The wait is measured between answers, not per call, so a server that holds the GIL
    (it runs in this process) shows up as well as one whose event loop is busy.
    """

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.worst = 0.0
        self.answers = 0
        self._last = 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
            except grpc.RpcError:
                self.worst = float("inf")  # not answered at all
                return
            self._answered()
            time.sleep(0.005)

    def _answered(self) -> None:
        now = time.monotonic()
        self.worst, self._last = max(self.worst, now - self._last), now
        self.answers += 1

    def __enter__(self) -> HealthWatch:
        self._health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        self._last = time.monotonic()
        self._thread.start()
        while self.answers == 0 and self.worst == 0:  # watching before the probe starts
            time.sleep(0.001)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.05)  # one more answer after the probe
        self._stop.set()
        self._thread.join(TIMEOUT + 1)
        self._channel.close()
        if self.worst != float("inf"):
            self._answered()  # the wait since the last answer counts too


def _refused(call: Any, request: Any) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    assert info.value.code() == BAD, (info.value.code(), (info.value.details() or "")[:300])
    return info.value.details() or "", elapsed


# --- 1: client text in status messages ---------------------------------------------------


@pytest.mark.parametrize(
    ("rpc", "field", "value", "noted"),
    [
        ("Classify", "x", {"shape": [1] * 200_000, "dtype": "float32"}, "(200000 items)"),
        ("Classify", "x", {"shape": [1, 8], "dtype": "f" * (1 << 20)}, "(1048576 chars)"),
        ("Echo", "x", {"shape": [1], "dtype": "f" * (1 << 20)}, "(1048576 chars)"),
        ("Halve", "f", "1/" + "x" * (1 << 20), "ValueError"),
    ],
    ids=["200k-dim-shape", "1MiB-dtype", "1MiB-dtype-any-tensor", "1MiB-plugin-error"],
)
def test_huge_client_text_gets_a_short_answer_at_once_while_health_answers(
    served: tuple[Any, Stubs], stub: tuple[Any, Any], rpc: str, field: str, value: Any, noted: str
) -> None:
    server, _ = served
    pb2, inference = stub
    argument = pb2.TensorProto(**value) if isinstance(value, dict) else value
    request = getattr(pb2, f"{rpc}Request")(**{field: argument})
    with HealthWatch(server.address) as health:
        details, elapsed = _refused(getattr(inference, f"Predict{rpc}"), request)
    assert elapsed < QUICK_S and health.worst < QUICK_S, (elapsed, health.worst)
    # The per-value cap, at the source: a short quote noting the full size, not a cut message.
    assert noted in details and len(details) < 600, details
    assert f"input {field!r}" in details


# --- 2: shapes are bounded before they are multiplied out --------------------------------


@pytest.mark.parametrize(
    ("shape", "data", "expected"),
    [
        ([2**62] * 100_000, b"", f"rank 100000, over the limit of {MAX_RANK}"),
        ([1] * (MAX_RANK + 1), b"\0" * 4, f"rank {MAX_RANK + 1}, over the limit of {MAX_RANK}"),
        ([2**62] * MAX_RANK, b"", "needs more than 0"),
        ([3] + [2**62] * (MAX_RANK - 1), b"\0" * 12, "needs more than 12"),
        ([0] + [2**62] * (MAX_RANK - 1), b"", "too large, even for an empty array"),
        ([0, 2**61], b"", "too large, even for an empty array"),
        ([2**31, 2**31, 0], b"", "too large, even for an empty array"),
        ([0, 4], b"\0" * 4, "data has 4 bytes, but shape [0, 4] of float32 needs 0"),
    ],
    ids=["100k-huge-dims", "rank-65", "64-huge-dims", "huge-after-small", "empty-64-huge-dims",
         "empty-past-addressable", "empty-2**64-bytes", "empty-with-data"],
)
def test_impossible_shapes_are_refused_quickly(
    served: tuple[Any, Stubs], stub: tuple[Any, Any], shape: list[int], data: bytes, expected: str
) -> None:
    server, _ = served
    pb2, inference = stub
    request = pb2.EchoRequest(x=pb2.TensorProto(shape=shape, dtype="float32", data=data))
    with HealthWatch(server.address) as health:
        details, elapsed = _refused(inference.PredictEcho, request)
    assert elapsed < QUICK_S and health.worst < QUICK_S, (elapsed, health.worst)
    assert expected in details and len(details) < 600, details


@pytest.mark.parametrize(
    "shape", [[1] * MAX_RANK, [0, 2**61 - 1], [3, 0, 2**40], [0] * MAX_RANK], ids=["rank-64", "empty-at-limit",
                                                                                  "empty-middle", "all-zero"]
)
def test_the_largest_possible_shapes_still_pass(stub: tuple[Any, Any], shape: list[int]) -> None:
    pb2, inference = stub
    data = b"\0" * 4 if 0 not in shape else b""
    reply = inference.PredictEcho(pb2.EchoRequest(x=pb2.TensorProto(shape=shape, dtype="float32", data=data)),
                                  timeout=TIMEOUT)
    assert list(reply.result.shape) == shape and reply.result.data == data


# --- 3, 4: dtypes are an allow-list --------------------------------------------------------


@pytest.mark.parametrize(
    "dtype",
    ["(1000000000,)f4", ",", "f4", "float", "<f4", "=f4", "|b1", "i4,i4", "V4", "S4", "U1", "O", "object", "M8",
     "float32 ", "Float32", "bfloat16", "float128", "float32\0"],
)
def test_dtypes_off_the_allow_list_are_invalid_argument(stub: tuple[Any, Any], dtype: str) -> None:
    pb2, inference = stub
    details, _ = _refused(inference.PredictEcho, pb2.EchoRequest(x=pb2.TensorProto(shape=[1], dtype=dtype,
                                                                                   data=b"\0" * 4)))
    assert "input 'x': unknown dtype" in details and "complex128" in details


def test_a_big_endian_float_is_refused_not_misread(stub: tuple[Any, Any]) -> None:
    pb2, inference = stub
    big = np.array([1.5, -2.0], dtype=">f4")
    request = pb2.EchoRequest(x=pb2.TensorProto(shape=[2], dtype=">f4", data=big.tobytes()))
    details, _ = _refused(inference.PredictEcho, request)
    assert "unknown dtype '>f4' (data is always little-endian: send the plain name)" in details
    # The same values sent as the contract says come back unchanged.
    reply = inference.PredictEcho(pb2.EchoRequest(x=tensor_proto(pb2, big.astype("<f4"))), timeout=TIMEOUT)
    assert array_from_proto(reply.result).tolist() == [1.5, -2.0]


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (">f4", "dtype '>f4' is not a wire dtype name; send 'float32'"),
        ("f4", "dtype 'f4' is not a wire dtype name; send 'float32'"),
        ("float", "dtype 'float' is not a wire dtype name; send 'float64'"),
        ("float32 ", "could not be decoded: TypeError"),
        ("(1000000000,)f4", "could not be decoded: ValueError"),
        (",", "could not be decoded: SyntaxError"),
    ],
)
def test_a_plugin_resolving_dtypes_with_numpy_gets_the_same_refusals(
    stub: tuple[Any, Any], dtype: str, expected: str
) -> None:
    pb2, inference = stub
    details, _ = _refused(inference.PredictFrame, pb2.FrameRequest(x=pb2.TensorProto(shape=[1], dtype=dtype,
                                                                                     data=b"\0" * 4)))
    assert details.startswith("input 'x'") and expected in details, details
    good = pb2.FrameRequest(x=pb2.TensorProto(shape=[1], dtype="float32", data=b"\0" * 4))
    assert inference.PredictFrame(good, timeout=TIMEOUT).result == "float32[1]:4"


@pytest.mark.parametrize("dtype", WIRE_DTYPES)
def test_every_allowed_dtype_round_trips(stub: tuple[Any, Any], dtype: str) -> None:
    pb2, inference = stub
    sent = (np.arange(6) % 2 if dtype == "bool" else np.arange(6) - 1 if dtype[0] != "u" else np.arange(6))
    sent = sent.astype(dtype).reshape(2, 3)
    reply = inference.PredictEcho(pb2.EchoRequest(x=tensor_proto(pb2, sent)), timeout=TIMEOUT)
    assert reply.result.dtype == dtype
    np.testing.assert_array_equal(array_from_proto(reply.result), sent)


def test_the_readme_names_every_allowed_dtype() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    paragraph = readme[readme.index("`TensorProto { repeated int64") :][:900]
    assert all(f"`{name}`" in paragraph for name in WIRE_DTYPES), paragraph


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        ({"f": "abc"}, "input 'f' could not be decoded: ValueError: Invalid literal for Fraction: 'abc'"),
        ({"f": "1", "fs": ["1/2", "1/0"]}, "input 'fs' could not be decoded: ZeroDivisionError"),
        ({"f": "1", "price": {"amount": "?", "currency": "EUR"}},
         "input 'price': Price field 'amount' could not be decoded: ValueError"),
    ],
    ids=["top-level", "in-a-list", "in-a-dataclass"],
)
def test_a_plugin_converter_that_raises_is_invalid_argument_naming_the_field(
    stub: tuple[Any, Any], request_fields: dict[str, Any], expected: str
) -> None:
    pb2, inference = stub
    fields = {"price": {"amount": "1", "currency": "EUR"}, **request_fields}
    details, _ = _refused(inference.PredictHalve, pb2.HalveRequest(**fields))
    assert details.startswith(expected), details
    good = pb2.HalveRequest(f="1/2", fs=["1/4"], price={"amount": "1/4", "currency": "EUR"})
    assert inference.PredictHalve(good, timeout=TIMEOUT).result == "1/2"


# --- 5: auth header values -------------------------------------------------------------------


def _raw_call(address: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, str]:
    """One unary gRPC call over HTTP/2 with header values exactly as given (grpcio refuses CR/LF)."""
    host, port = address.rsplit(":", 1)
    config = h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False, validate_inbound_headers=False,
    )
    connection = h2.connection.H2Connection(config)
    received: dict[bytes, bytes] = {}
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, [
            (b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()),
            (b":authority", address.encode()), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
            *headers,
        ])
        connection.send_data(stream, b"\0" + len(body).to_bytes(4, "big") + body, end_stream=True)
        sock.sendall(connection.data_to_send())
        ended = False
        while not ended:
            chunk = sock.recv(65536)
            assert chunk, "server closed the connection without answering"
            for event in connection.receive_data(chunk):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    received.update(dict(event.headers))
                elif isinstance(event, h2.events.DataReceived):
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    raise AssertionError(f"stream reset: {event.error_code}")
                ended = ended or isinstance(event, h2.events.StreamEnded)
            sock.sendall(connection.data_to_send())
    return int(received[b"grpc-status"]), unquote(received.get(b"grpc-message", b"").decode())


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Stubs]]:
    tokens = tmp_path_factory.mktemp("auth") / "tokens"
    tokens.write_text(f"prober {TOKEN}\n")
    os.chmod(tokens, 0o600)
    server = start_server(probe_app(), extra={"auth_tokens_file": str(tokens), "auth_all_services": True})
    try:
        yield server, compile_stubs(server.proto_text)
    finally:
        server.stop()


OK, UNAUTHENTICATED = grpc.StatusCode.OK.value[0], grpc.StatusCode.UNAUTHENTICATED.value[0]


@pytest.mark.parametrize(
    ("header", "value", "status"),
    [
        (b"x-api-key", TOKEN.encode(), OK),
        (b"x-api-key", b"\t" + TOKEN.encode() + b" \t", OK),
        (b"authorization", b"Bearer \t" + TOKEN.encode() + b"\t", OK),
        (b"authorization", b"Bearer " + TOKEN.encode() + b"\r\n", UNAUTHENTICATED),
        (b"authorization", b"Bearer " + TOKEN.encode() + b"\r\nx-role: admin", UNAUTHENTICATED),
        (b"authorization", b"\r\nBearer " + TOKEN.encode(), UNAUTHENTICATED),
        (b"x-api-key", TOKEN.encode() + b"\r\n", UNAUTHENTICATED),
        (b"x-api-key", b"\n" + TOKEN.encode(), UNAUTHENTICATED),
        (b"x-api-key", TOKEN.encode() + b"\0", UNAUTHENTICATED),
        (b"x-api-key", TOKEN.encode() + b"\x7f", UNAUTHENTICATED),
        (b"x-api-key", TOKEN[:8].encode() + b"\t" + TOKEN[8:].encode(), UNAUTHENTICATED),
    ],
    ids=["plain-key", "key-in-tabs", "bearer-in-tabs", "bearer-crlf", "bearer-injected-header", "leading-crlf",
         "key-crlf", "key-leading-lf", "key-nul", "key-del", "key-inner-tab"],
)
@pytest.mark.parametrize("path", ["/blazerpc.InferenceService/PredictEcho", HEALTH_CHECK], ids=["model", "health"])
def test_auth_header_values_with_control_characters_are_refused(
    guarded: tuple[Any, Stubs], path: str, header: bytes, value: bytes, status: int
) -> None:
    server, stubs = guarded
    body = b"" if path == HEALTH_CHECK else stubs.pb2.EchoRequest(x=tensor_proto(stubs.pb2, [1.0])).SerializeToString()
    code, message = _raw_call(server.address, path, body, [(header, value)])
    assert code == status, message
    if status == UNAUTHENTICATED:
        assert message == "invalid credentials"


@pytest.mark.parametrize(
    ("metadata", "ok"),
    [
        ((("x-api-key", f"  {TOKEN}  "),), True),
        ((("authorization", f"Bearer   {TOKEN}  "),), True),
        ((("x-api-key", ""),), False),
        ((("x-api-key", "   "),), False),
        ((("authorization", "Bearer    "),), False),
    ],
    ids=["padded-key", "padded-bearer", "empty-key", "blank-key", "blank-bearer"],
)
def test_both_headers_are_stripped_and_refused_when_empty(
    guarded: tuple[Any, Stubs], metadata: Any, ok: bool
) -> None:
    server, stubs = guarded
    with grpc.insecure_channel(server.address) as channel:
        inference = stubs.pb2_grpc.InferenceServiceStub(channel)
        request = stubs.pb2.EchoRequest(x=tensor_proto(stubs.pb2, [1.0]))
        if ok:
            assert list(inference.PredictEcho(request, metadata=metadata, timeout=TIMEOUT).result.shape) == [1]
            return
        with pytest.raises(grpc.RpcError) as info:
            inference.PredictEcho(request, metadata=metadata, timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert info.value.details() == "invalid credentials"
