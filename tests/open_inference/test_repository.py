"""RepositoryIndex, RepositoryModelLoad and RepositoryModelUnload onto the model host, with the management rules."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from blazerpc_core import BlazeApp
from blazerpc_core.testing import RunningServer, start_server

base = BlazeApp()


@base.model("base")
def base_model(x: float) -> float:
    return x


EXTRA = textwrap.dedent('''
    from blazerpc_core import model

    @model("extra")
    def extra(x: float) -> float:
        return x + 1
''')


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    (root / "extra.py").write_text(EXTRA)
    (root / "other.py").write_text(EXTRA.replace('"extra"', '"other"'))
    return root


@pytest.fixture(scope="module")
def explicit(repository: Path) -> Iterator[RunningServer]:
    running = start_server(base, load_entry_points=False, model_control="explicit", model_repository=str(repository))
    yield running
    running.stop(grace_period=5)


def _x(value: float) -> list[grpcclient.InferInput]:
    item = grpcclient.InferInput("x", [1], "FP64")
    item.set_data_from_numpy(np.array([value]))
    return [item]


def _index(client: Any, ready: bool = False) -> list[dict[str, str]]:
    return client.get_model_repository_index(as_json=True).get("models", [])


def test_index_lists_models_with_the_reason_they_have_no_tensor_form(client):
    rows = {row["name"]: row for row in _index(client)}
    assert rows["add"] == {"name": "add", "version": "1", "state": "READY"}
    assert rows["mapped"]["state"] == "READY" and "parameter 'counts'" in rows["mapped"]["reason"]
    assert "parameter 'values'" in rows["total"]["reason"] and "client stream" in rows["total"]["reason"]
    ready_only = client.get_model_repository_index(as_json=True)
    assert {row["name"] for row in ready_only["models"]} >= {"add", "matmul", "tokens"}


def test_changing_models_needs_model_control(client):
    for change in (client.load_model, client.unload_model):
        with pytest.raises(InferenceServerException) as caught:
            change("add")
        assert caught.value.status() == "StatusCode.FAILED_PRECONDITION"
        assert "--model-control explicit" in caught.value.message()
    assert client.is_model_ready("add")


def test_load_by_model_name_infer_reload_and_unload(explicit):
    with grpcclient.InferenceServerClient(explicit.address) as client:
        rows = {row["name"]: row for row in _index(client)}
        assert rows["extra.py"] == {"name": "extra.py", "state": "UNAVAILABLE", "reason": "not loaded"}
        assert "other.py" in rows and rows["base"]["state"] == "READY"

        client.load_model("extra")  # a Triton client loads by model name: the stem of extra.py
        assert client.is_model_ready("extra")
        assert client.infer("extra", _x(1.0)).as_numpy("result").tolist() == [2.0]
        rows = {row["name"]: row for row in _index(client)}
        assert rows["extra"]["state"] == "READY" and "extra.py" not in rows

        client.load_model("extra")  # already served: reloaded, as Triton does
        assert client.infer("extra", _x(2.0)).as_numpy("result").tolist() == [3.0]

        client.load_model("other.py")  # an entry named as it is
        assert client.is_model_ready("other")

        client.unload_model("extra")
        with pytest.raises(InferenceServerException) as caught:
            client.infer("extra", _x(1.0))
        assert caught.value.status() == "StatusCode.NOT_FOUND"
        assert "extra.py" in {row["name"] for row in _index(client)}


def test_load_errors(explicit):
    with grpcclient.InferenceServerClient(explicit.address) as client:
        with pytest.raises(InferenceServerException) as caught:
            client.load_model("does-not-exist")
        assert caught.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as caught:
            client.load_model("base", config='{"max_batch_size": 8}')
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT" and "'config'" in caught.value.message()
        with pytest.raises(InferenceServerException) as caught:
            client.load_model("../escape.py")
        assert caught.value.status() == "StatusCode.PERMISSION_DENIED"
        with pytest.raises(InferenceServerException) as caught:
            client.unload_model("never-loaded")
        assert caught.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as caught:
            client.load_model("")
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_the_asyncio_client_loads_and_unloads(explicit):
    import asyncio

    import tritonclient.grpc.aio as aioclient

    async def main() -> None:
        async with aioclient.InferenceServerClient(explicit.address) as client:
            await client.load_model("other")
            assert await client.is_model_ready("other")
            index = await client.get_model_repository_index(as_json=True)
            assert any(row["name"] == "other" and row["state"] == "READY" for row in index["models"])
            await client.unload_model("other")
            with pytest.raises(InferenceServerException) as caught:
                await client.is_model_ready("other")
            assert caught.value.status() == "StatusCode.NOT_FOUND"

    asyncio.run(main())
