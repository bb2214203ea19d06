"""Saved torch models: ``blazerpc serve model.pt`` / ``model.pt2`` and ``blazerpc_torch.load_model``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import blazerpc_torch
import grpc
import numpy as np
import pytest
import torch
from torch_helpers import from_tensor, to_tensor
from torch_models import TwoHeads, mlp, save_export, save_script, save_traced

from blazerpc_core import BlazeApp, RegistrationError
from blazerpc_core.testing import cli_stubs, run_cli, serve_cli


def _expect_invalid(call: Any, request: Any, fragment: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert fragment in info.value.details()


APP = """
import torch
from blazerpc_core import BlazeApp

app = BlazeApp()
torch.manual_seed(7)
net = torch.nn.Linear(512, 10).eval()

@app.model("classify")
def classify(x: torch.Tensor) -> torch.Tensor:   # batch dimension first
    assert torch.is_inference_mode_enabled()
    return net(x)
"""


def test_serve_app_file_with_torch_tensors(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    stubs = cli_stubs([str(app)], tmp_path)
    torch.manual_seed(7)
    net = torch.nn.Linear(512, 10).eval()
    x = torch.randn(2, 512)
    with serve_cli(str(app), "--torch-threads", "1") as server, grpc.insecure_channel(server.address) as channel:
        reply = stubs.pb2_grpc.InferenceServiceStub(channel).PredictClassify(
            stubs.pb2.ClassifyRequest(x=to_tensor(stubs.pb2, x)), timeout=60
        )
    with torch.no_grad():
        np.testing.assert_allclose(from_tensor(reply.result).numpy(), net(x).numpy(), rtol=1e-6)


def test_serve_torchscript_file(tmp_path: Path) -> None:
    module = TwoHeads().eval()
    path = str(save_script(module, tmp_path / "two_heads.pt"))
    stubs = cli_stubs([path], tmp_path)
    pb2 = stubs.pb2
    assert [f.name for f in pb2.TwoHeadsRequest.DESCRIPTOR.fields] == ["a", "b"]
    assert [f.name for f in pb2.TwoHeadsResponse.DESCRIPTOR.fields] == ["output_0", "output_1"]
    a, b = torch.randn(2, 4), torch.randn(2, 5)
    with torch.no_grad():
        first, second = module(a, b)
    with serve_cli(path) as server, grpc.insecure_channel(server.address) as channel:
        call = stubs.pb2_grpc.InferenceServiceStub(channel).PredictTwoHeads
        reply = call(pb2.TwoHeadsRequest(a=to_tensor(pb2, a), b=to_tensor(pb2, b)), timeout=60)
        np.testing.assert_allclose(from_tensor(reply.output_0).numpy(), first.numpy(), rtol=1e-6)
        np.testing.assert_allclose(from_tensor(reply.output_1).numpy(), second.numpy(), rtol=1e-6)
        # Any float dtype is accepted and converted to the module's float32.
        reply = call(pb2.TwoHeadsRequest(a=to_tensor(pb2, a.double()), b=to_tensor(pb2, b.half())), timeout=60)
        assert reply.output_0.dtype == "float32"
        np.testing.assert_allclose(from_tensor(reply.output_0).numpy(), first.numpy(), rtol=1e-2, atol=1e-2)
        _expect_invalid(call, pb2.TwoHeadsRequest(a=to_tensor(pb2, a.long()), b=to_tensor(pb2, b)),
                        "dtype is int64, expected float32 or float64 or float16 or bfloat16")
        code = server.stop()
    assert code == 0, server.output()
    assert "PredictTwoHeads" in server.output()


def test_serve_exported_program(tmp_path: Path) -> None:
    net = mlp()
    path = str(save_export(net, (torch.randn(4, 512),), tmp_path / "mlp.pt2"))
    env = {"BLAZERPC_NAME": "classify", "BLAZERPC_TORCH_THREADS": "1"}
    stubs = cli_stubs([path], tmp_path, env=env)
    pb2 = stubs.pb2
    x = torch.randn(3, 512)
    with torch.no_grad():
        expected = net(x).numpy()
    with serve_cli(path, "--torch-device", "cpu", env=env) as server, \
            grpc.insecure_channel(server.address) as channel:
        call = stubs.pb2_grpc.InferenceServiceStub(channel).PredictClassify
        reply = call(pb2.ClassifyRequest(input=to_tensor(pb2, x)), timeout=60)
        np.testing.assert_allclose(from_tensor(reply.result).numpy(), expected, rtol=1e-5, atol=1e-6)
        one = call(pb2.ClassifyRequest(input=to_tensor(pb2, x[:1])), timeout=60)
        np.testing.assert_allclose(from_tensor(one.result).numpy(), expected[:1], rtol=1e-5, atol=1e-6)
        # The program records float32[batch, 512]: other dtypes and widths are the caller's error.
        _expect_invalid(call, pb2.ClassifyRequest(input=to_tensor(pb2, x.double())), "expected float32")
        _expect_invalid(call, pb2.ClassifyRequest(input=to_tensor(pb2, torch.randn(3, 511))), "dimension 1 is 511")


def test_exported_program_is_batched_by_default(tmp_path: Path, blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    net = mlp()
    path = save_export(net, (torch.randn(4, 512),), tmp_path / "mlp.pt2")
    spec = blazerpc_torch.load_model(path, name="classify")
    (_, x_spec, _), = spec.inputs
    assert x_spec.batch_named and x_spec.shape == (None, 512) and x_spec.dtypes == ("float32",)
    assert not blazerpc_torch.load_model(path, batch=False).inputs[0][1].batch_named
    fixed = save_export(net, (torch.randn(4, 512),), tmp_path / "fixed.pt2", dynamic=False)
    assert not blazerpc_torch.load_model(fixed).inputs[0][1].batch_named
    with pytest.raises(RegistrationError, match="cannot be batched"):
        blazerpc_torch.load_model(fixed, batch=True)
    app = BlazeApp()
    app.add(spec)
    server = blazerpc_serve(app)
    stubs = blazerpc_stubs(server)
    xs = [torch.randn(1 + i % 2, 512) for i in range(8)]
    with grpc.insecure_channel(server.address) as channel:
        call = stubs.pb2_grpc.InferenceServiceStub(channel).PredictClassify
        futures = [call.future(stubs.pb2.ClassifyRequest(input=to_tensor(stubs.pb2, x)), timeout=60) for x in xs]
        results = [from_tensor(f.result().result) for f in futures]
    with torch.no_grad():
        for x, got in zip(xs, results, strict=True):
            np.testing.assert_allclose(got.numpy(), net(x).numpy(), rtol=1e-5, atol=1e-6)


class Same(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.float16, torch.bfloat16])
def test_exported_dtypes(dtype: torch.dtype, tmp_path: Path, blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    x = (torch.arange(6).reshape(2, 3) % 2).to(dtype)
    app = BlazeApp()
    app.add(blazerpc_torch.load_model(save_export(Same(), (x,), tmp_path / "same.pt2")))
    server = blazerpc_serve(app)
    stubs = blazerpc_stubs(server)
    with grpc.insecure_channel(server.address) as channel:
        call = stubs.pb2_grpc.InferenceServiceStub(channel).PredictSame
        reply = call(stubs.pb2.SameRequest(x=to_tensor(stubs.pb2, x)), timeout=60)
        assert torch.equal(from_tensor(reply.result), x)
        other = torch.float64 if dtype != torch.float64 else torch.float32
        _expect_invalid(call, stubs.pb2.SameRequest(x=to_tensor(stubs.pb2, x.to(other))), "expected")


def test_traced_module_in_an_app(tmp_path: Path, blazerpc_serve: Any, blazerpc_stubs: Any) -> None:
    net = torch.nn.Linear(4, 2).eval()
    path = save_traced(net, torch.zeros(1, 4), tmp_path / "linear.pt")
    spec = blazerpc_torch.load_model(path, name="linear", batch=True)
    assert [name for name, _, _ in spec.inputs] == ["input"]
    app = BlazeApp()
    app.add(spec)
    server = blazerpc_serve(app)
    stubs = blazerpc_stubs(server)
    x = torch.randn(5, 4)
    with grpc.insecure_channel(server.address) as channel:
        reply = stubs.pb2_grpc.InferenceServiceStub(channel).PredictLinear(
            stubs.pb2.LinearRequest(input=to_tensor(stubs.pb2, x)), timeout=60
        )
    with torch.no_grad():
        np.testing.assert_allclose(from_tensor(reply.result).numpy(), net(x).numpy(), rtol=1e-6)


class TakesInt(torch.nn.Module):
    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return x * k


def test_files_that_cannot_be_served_are_refused_by_name(tmp_path: Path) -> None:
    pickled = tmp_path / "pickled.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)
    with pytest.raises(RegistrationError, match="not a TorchScript archive"):
        blazerpc_torch.load_model(pickled)
    with pytest.raises(RegistrationError, match="input 'k' is int"):
        blazerpc_torch.load_model(save_script(TakesInt(), tmp_path / "takes_int.pt"))
    with pytest.raises(RegistrationError, match="no such file"):
        blazerpc_torch.load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt2").write_bytes(b"junk")
    with pytest.raises(RegistrationError, match=r"not a torch\.export program"):
        blazerpc_torch.load_model(tmp_path / "junk.pt2")
    script = save_script(TwoHeads(), tmp_path / "two.pt")
    with pytest.raises(RegistrationError, match="torch device"):
        blazerpc_torch.load_model(script, device="warp")
    result = run_cli("serve", str(pickled), "--port", "0")
    assert result.returncode != 0 and "not a TorchScript archive" in result.stderr
