"""Every type of the wire contract through the client, both ways, sync and async, with no .proto."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from grpclib.const import Status

from blazerpc_core.client import AsyncClient, CallError, Client, ModelInfo
from tests.apps import Box, Color, varied_app
from tests.client.client_apps import NOT_RETRIED, SLOW_RETRY, TIMEOUT, Calls, streaming_app


@pytest.fixture(scope="module")
def varied() -> Any:
    from blazerpc_core.testing import start_server

    server = start_server(varied_app())
    yield server
    server.stop(grace_period=2)


@pytest.fixture(scope="module")
def client(varied: Any) -> Any:
    with Client(varied.address, timeout=TIMEOUT) as client:
        yield client


def test_scalars_strings_bytes_and_bools(client: Client) -> None:
    assert client.call("add", a=0.1, b=0.2) == 0.30000000000000004  # float64 end to end
    big = -(2**40)
    assert client.call("echo-scalars", s="héllo", i=big, flag=True, raw=b"\x00\xff") == f"héllo|{big}|True|00ff"
    # A bytes input also takes text (UTF-8) and any bytes-like object.
    assert client.call("echo-scalars", s="", i=0, flag=False, raw=bytearray(b"\x01")) == "|0|False|01"
    assert client.call("echo-scalars", s="", i=0, flag=False, raw="A") == "|0|False|41"


def test_lists_optionals_and_maps(client: Client) -> None:
    assert client.call("count-words", texts=["a b c", "", "d"]) == [3, 0, 1]
    assert client.call("count-words", texts=()) == []
    assert client.call("count-words") == []  # a repeated field may be left out: it is empty
    assert client.call("maybe", x=None) == "none"  # None leaves an optional field absent
    assert client.call("maybe") == "none"
    assert client.call("maybe", x=0) == "got 0"  # zero is present, not absent
    assert client.call("weights", scores={"a": 1.0, "b": 3.0}) == {"a": 0.25, "b": 0.75}
    assert client.call("weights", scores={}) == {}


def test_enums_by_member_name_full_name_number_or_member(client: Client) -> None:
    assert client.call("next-color", color="GREEN") == "BLUE"  # members come back by name
    assert client.call("next-color", color="blue") == "RED"
    assert client.call("next-color", color="COLOR_RED") == "GREEN"
    assert client.call("next-color", color=1) == "BLUE"
    assert client.call("next-color", color=Color.BLUE) == "RED"
    with pytest.raises(ValueError, match=r"'PURPLE' is not a value of enum Color \(one of RED, GREEN, BLUE\)"):
        client.call("next-color", color="PURPLE")


def test_nested_messages_from_dicts_and_dataclasses(client: Client) -> None:
    result = client.call("area", box={"x": 2.0, "y": 3.0, "label": "a"}, boxes=[Box(1.0, 1.0, "b"), Box(2, 2, "c")])
    # Several output fields come back as a dict (a dataclass / NamedTuple return).
    assert result == {"total": 11.0, "count": 3, "labels": ["a", "b", "c"]}
    assert client.call("area", box=Box(1, 1, ""), boxes=[]) == {"total": 1.0, "count": 1, "labels": [""]}
    # An optional parameter with a Python default: absent means the default, not zero.
    assert client.call("shift", box=Box(1.0, 2.0, "up")) == {"x": 2.5, "y": 2.0, "label": "UP"}
    assert client.call("shift", box={"x": 1.0, "y": 2.0, "label": "up"}, dx=0.0) == {"x": 1.0, "y": 2.0, "label": "UP"}
    with pytest.raises(TypeError, match="message Box has no field 'z'"):
        client.call("shift", box={"x": 1.0, "y": 2.0, "label": "", "z": 1})


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int8", "int64", "uint16", "bool", "complex64"])
def test_numpy_arrays_both_ways(client: Client, dtype: str) -> None:
    array = (np.arange(12).reshape(4, 3) % 3).astype(dtype)
    out = client.call("flip", x=array)
    assert isinstance(out, np.ndarray) and out.dtype == array.dtype and out.shape == (4, 3)
    np.testing.assert_array_equal(out, array[::-1])
    assert not out.flags.writeable  # decoded with numpy.frombuffer, without a copy


def test_tensor_layouts_and_array_likes(client: Client) -> None:
    # Not C-contiguous, big-endian, plain lists, 0-d and empty arrays all travel as C-order little-endian.
    fortran = np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3))
    np.testing.assert_array_equal(client.call("flip", x=fortran), fortran[::-1])
    big_endian = np.arange(4, dtype=">f8").reshape(2, 2)
    out = client.call("flip", x=big_endian)
    assert out.dtype == np.dtype("<f8")
    np.testing.assert_array_equal(out, big_endian[::-1])
    np.testing.assert_array_equal(client.call("flip", x=[[1, 2], [3, 4]]), [[3, 4], [1, 2]])
    assert client.call("flip", x=np.zeros((0, 5), np.float32)).shape == (0, 5)
    x = np.ones((2, 8), np.float32)
    np.testing.assert_array_equal(client.call("classify", x=x), np.full((2, 2), 2.0, np.float32))
    # The JSON form `blazerpc call` prints is accepted back.
    assert client.call("classify", x={"dtype": "float32", "shape": [1, 8], "data": [0.5] * 8}).tolist() == [[1.0, 1.0]]
    with pytest.raises(TypeError, match="dtype <U1 cannot travel in a TensorProto"):
        client.call("flip", x=np.array(["a"]))


def test_bad_tensor_is_invalid_argument_with_the_servers_request_id(varied: Any) -> None:
    client = Client(varied.address, timeout=TIMEOUT, retry=SLOW_RETRY)
    started = time.monotonic()
    with pytest.raises(CallError) as info:
        client.call("classify", x=np.ones((2, 8), np.float64))
    assert time.monotonic() - started < NOT_RETRIED
    error = info.value
    assert error.status is Status.INVALID_ARGUMENT
    assert "float64" in error.message and "float32" in error.message
    assert error.address == varied.address
    assert error.request_id  # the x-request-id trailer
    with pytest.raises(CallError) as info:
        client.call("classify", x=np.ones((2, 7), np.float32))
    assert info.value.status is Status.INVALID_ARGUMENT and "dimension 1 is 7" in info.value.message
    client.close()


def test_versions(client: Client) -> None:
    assert client.call("version-me", x=1) == 3  # the default (highest) version
    assert client.call("version-me", x=1, version="1") == 2
    assert client.call("version-me", x=1, version=2) == 3
    assert client.call("VersionMe", x=1, version=1) == 2  # any spelling with the same Pascal name
    with pytest.raises(CallError) as info:
        client.call("version-me", x=1, version="7")
    assert info.value.status is Status.NOT_FOUND and "versions: 1, 2" in info.value.message
    with pytest.raises(CallError) as info:
        client.call("add", a=1, b=2, version="1")
    assert info.value.status is Status.NOT_FOUND


def test_models_describe_names_versions_shapes_and_fields(client: Client) -> None:
    models = {(m.name, m.version): m for m in client.models()}
    add = models["add", None]
    assert isinstance(add, ModelInfo) and add.rpc == "PredictAdd" and add.shape == "unary"
    assert [(f.name, f.type, f.required) for f in add.inputs] == [("a", "double", True), ("b", "double", True)]
    assert [(f.name, f.type) for f in add.outputs] == [("result", "double")]
    assert models["version-me", None].versions == ("1", "2")
    assert models["version-me", "1"].rpc == "PredictVersionMeV1"
    assert models["echo-scalars", None].rpc == "PredictEchoScalars"
    assert [f.type for f in models["maybe", None].inputs] == ["optional int64"]
    assert [f.type for f in models["weights", None].inputs] == ["map<string, double>"]
    assert [f.type for f in models["area", None].inputs] == ["Box", "repeated Box"]
    assert models["next-color", None].inputs[0].values == ("RED", "GREEN", "BLUE")
    assert [f.type for f in models["classify", None].outputs] == ["TensorProto"]


def test_unknown_and_missing_inputs_are_type_errors_before_any_call(blazerpc_serve: Any) -> None:
    calls = Calls()
    server = blazerpc_serve(streaming_app(calls))
    with Client(server.address, timeout=TIMEOUT) as client:
        with pytest.raises(TypeError, match=r"whoami \(PredictWhoami\) got unexpected input\(s\) 'y'; "
                                            r"its inputs are: x: int64"):
            client.call("whoami", y=1)
        with pytest.raises(TypeError, match=r"missing input\(s\) 'x'"):
            client.call("whoami")
        with pytest.raises(TypeError, match="field 'x' \\(int64\\)"):
            client.call("whoami", x="seven")
        # An input named like a call option goes in the positional mapping.
        assert client.call("whoami", {"x": 1}) == "server"
        with pytest.raises(TypeError, match="given twice"):
            client.call("whoami", {"x": 1}, x=2)
    assert calls["whoami"] == 1


def test_unknown_model_is_not_found_naming_what_is_served(client: Client) -> None:
    with pytest.raises(CallError) as info:
        client.call("nope", x=1)
    assert info.value.status is Status.NOT_FOUND
    assert "no model 'nope'" in info.value.message and "add" in info.value.message


def test_async_client_and_concurrent_sync_threads(varied: Any, client: Client) -> None:
    async def main() -> list[Any]:
        async with AsyncClient([varied.address], timeout=TIMEOUT) as aclient:
            assert await aclient.call("add", a=1.0, b=2.0) == 3.0
            return list(await asyncio.gather(*(aclient.call("add", a=float(i), b=1.0) for i in range(50))))

    assert asyncio.run(main()) == [float(i) + 1.0 for i in range(50)]

    # One sync client shared by several threads.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: client.call("add", a=float(i), b=0.5), range(64)))
    assert results == [i + 0.5 for i in range(64)]


def test_deadlines_default_and_per_call(blazerpc_serve: Any) -> None:
    server = blazerpc_serve(streaming_app())
    with Client(server.address, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(CallError) as info:
            client.call("sleepy", seconds=5.0)
        assert info.value.status is Status.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2.0
        assert client.call("sleepy", seconds=0.5, timeout=5.0) == "server"
        with pytest.raises(ValueError, match="timeout must be positive"):
            client.call("sleepy", seconds=0.0, timeout=0)
