"""How torch models are called, for every call shape: under inference mode, on the configured device.

Over a real socket: the model reports what it saw in its own results, so what is checked
is what the server did, not what a helper would do when called directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch_helpers import from_tensor, to_tensor

from blazerpc_core import BlazeApp

#: More items than a sync generator computes in one burst (the server's DEFAULT_AHEAD is
#: 256), so its body is entered from the pool several times.
ITEMS = 700


def test_streaming_model_runs_under_inference_mode_in_every_burst(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    app = BlazeApp()

    @app.model("ramp")
    def ramp(x: torch.Tensor, n: int) -> Iterator[torch.Tensor]:
        for i in range(n):
            made = x * i  # created by the model, between yields
            flags = [torch.is_inference_mode_enabled(), made.is_inference(), not torch.is_grad_enabled()]
            yield torch.cat([made, torch.tensor(flags, dtype=made.dtype)])

    server = blazerpc_serve(app)
    conn = blazerpc_connect(server)
    x = torch.tensor([1.0, 2.0])
    items = [from_tensor(reply.result) for reply in conn.stub.PredictRamp(
        conn.pb2.RampRequest(x=to_tensor(conn.pb2, x), n=ITEMS), timeout=120
    )]
    assert len(items) == ITEMS
    for i, item in enumerate(items):
        assert torch.equal(item[:2], x * i), i
        assert item[2:].tolist() == [1.0, 1.0, 1.0], f"item {i}: inference mode, inference tensor, no grad"


def test_every_call_shape_runs_on_the_configured_device(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    # "meta" is a device every torch build has that is not the CPU: tensors there carry
    # no data, so the models report where their inputs and their own tensors live.
    app = BlazeApp()

    def where(*tensors: torch.Tensor) -> str:
        return " ".join([*(t.device.type for t in tensors), str(torch.is_inference_mode_enabled())])

    @app.model("unary")
    def unary(x: torch.Tensor) -> str:
        return where(x, x + 1)

    @app.model("batched", batch=True, max_batch_size=8)
    def batched(x: torch.Tensor) -> list[str]:
        return [where(row, row * 2) for row in x]

    @app.model("server-stream")
    def server_stream(x: torch.Tensor) -> Iterator[str]:
        for i in range(3):
            yield where(x, x * i)

    @app.model("bidi")
    def bidi(xs: Iterator[torch.Tensor]) -> Iterator[str]:
        for x in xs:
            yield where(x, x - 1)

    server = blazerpc_serve(app, extra={"torch_device": "meta"})
    conn = blazerpc_connect(server)
    pb2, stub = conn.pb2, conn.stub
    x = to_tensor(pb2, torch.ones(2, 3))
    on_device = "meta meta True"
    assert stub.PredictUnary(pb2.UnaryRequest(x=x), timeout=60).result == on_device
    assert list(stub.PredictBatched(pb2.BatchedRequest(x=x), timeout=60).result) == [on_device] * 2
    streamed = [reply.result for reply in stub.PredictServerStream(pb2.ServerStreamRequest(x=x), timeout=60)]
    assert streamed == [on_device] * 3
    requests = iter([pb2.BidiRequest(xs=x) for _ in range(4)])
    assert [reply.result for reply in stub.PredictBidi(requests, timeout=60)] == [on_device] * 4
