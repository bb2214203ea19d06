"""The middleware chain over a real server: order, inputs and outputs, rejection, trailers, status.

Also the request-id plugin, and that disabling a built-in plugin by name removes its effect.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest

from blazerpc_core import BlazeApp, CallContext, PermissionDenied, hookimpl
from blazerpc_core.call import CallNext
from blazerpc_core.settings import ServeSettings
from blazerpc_core.testing import Connection
from tests.apps import add_app


class Recorder:
    """Test middleware: records what it saw, can reject, and rewrites outputs on request."""

    def __init__(self, name: str, log: list[str], finished: list[CallContext]) -> None:
        self.name = name
        self.log = log
        self.finished = finished
        self.done = threading.Event()

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        self.log.append(f"{self.name}:in")
        if ctx.metadata.get("x-block") == self.name:
            raise PermissionDenied(f"blocked by {self.name}")
        ctx.on_done.append(self._finished)
        ctx.trailing_metadata[f"x-seen-by-{self.name}"] = ",".join(sorted(ctx.inputs or {})) or "-"
        result = await call_next(ctx)
        self.log.append(f"{self.name}:out={result}")
        return result * 10 if ctx.metadata.get("x-scale") == self.name else result

    def _finished(self, ctx: CallContext) -> None:
        self.finished.append(ctx)
        self.done.set()


class ChainPlugin:
    """Contributes two recorders, ``outer`` then ``inner``."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.finished: list[CallContext] = []
        self.outer = Recorder("outer", self.log, self.finished)
        self.inner = Recorder("inner", self.log, self.finished)
        self.__name__ = "chain-test"

    @hookimpl
    def blazerpc_middleware(self, settings: ServeSettings) -> list[Any]:
        return [self.outer, self.inner]


@pytest.fixture
def chain_server(blazerpc_serve: Any, blazerpc_connect: Any) -> tuple[Any, Connection, ChainPlugin]:
    plugin = ChainPlugin()
    server = blazerpc_serve(add_app(), plugins=[plugin])
    return server, blazerpc_connect(server), plugin


def call(conn: Connection, *, metadata: tuple[tuple[str, str], ...] = (), **fields: Any) -> Any:
    return conn.stub.PredictAdd.with_call(conn.pb2.AddRequest(**fields), metadata=metadata, timeout=10)


def test_chain_runs_outermost_first_and_sees_inputs_and_outputs(chain_server: Any) -> None:
    _, conn, plugin = chain_server
    response, rpc = call(conn, a=1, b=2, metadata=(("x-scale", "outer"),))
    # Outer scales the value inner saw: outer wraps inner.
    assert response.result == 30
    assert plugin.log == ["outer:in", "inner:in", "inner:out=3.0", "outer:out=3.0"]
    trailers = dict(rpc.trailing_metadata())
    assert trailers["x-seen-by-outer"] == "a,b"
    assert trailers["x-seen-by-inner"] == "a,b"


def test_middleware_rejects_and_inner_layers_never_run(chain_server: Any) -> None:
    _, conn, plugin = chain_server
    with pytest.raises(grpc.RpcError) as info:
        call(conn, a=1, b=2, metadata=(("x-block", "outer"),))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "blocked by outer" in (info.value.details() or "")
    assert plugin.log == ["outer:in"]


def test_on_done_sees_final_status_and_latency(chain_server: Any) -> None:
    _, conn, plugin = chain_server
    call(conn, a=1, b=2)
    assert plugin.outer.done.wait(10)
    ctx = plugin.finished[-1]
    assert (ctx.status, ctx.model.name, ctx.rpc) == ("OK", "add", "PredictAdd")
    assert ctx.elapsed() >= 0
    assert ctx.peer is not None and ctx.peer.startswith("127.0.0.1:")


def test_undecodable_request_still_runs_the_chain(chain_server: Any) -> None:
    """Garbage bytes never reach the model, but middleware (auth, logs, metrics) sees the call."""
    server, _, plugin = chain_server
    with grpc.insecure_channel(server.address) as channel:
        raw = channel.unary_unary("/blazerpc.InferenceService/PredictAdd")
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\xff\xff\xff", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert plugin.outer.done.wait(10)
    assert plugin.finished[0].status == "INVALID_ARGUMENT"
    assert plugin.finished[0].inputs is None
    assert plugin.log == ["outer:in", "inner:in"]


def test_request_id_is_generated_and_returned(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    conn = blazerpc_connect(blazerpc_serve(add_app()))
    ids = {dict(call(conn, a=1, b=1)[1].trailing_metadata())["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


def test_request_id_from_client_is_honoured_and_junk_replaced(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    conn = blazerpc_connect(blazerpc_serve(add_app()))
    _, rpc = call(conn, a=1, b=1, metadata=(("x-request-id", "req-42.abc"),))
    assert dict(rpc.trailing_metadata())["x-request-id"] == "req-42.abc"
    # Spaces and quotes could forge access-log fields: such ids are replaced, not echoed.
    _, rpc = call(conn, a=1, b=1, metadata=(("x-request-id", 'a" status=OK'),))
    returned = dict(rpc.trailing_metadata())["x-request-id"]
    assert returned and " " not in returned and '"' not in returned


def test_request_id_is_returned_on_errors_too(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    app = BlazeApp()

    @app.model("boom")
    def boom(x: int) -> int:
        raise RuntimeError("kaboom")

    conn = blazerpc_connect(blazerpc_serve(app))
    with pytest.raises(grpc.RpcError) as info:
        conn.stub.PredictBoom(conn.pb2.BoomRequest(x=1), metadata=(("x-request-id", "trace-me"),), timeout=10)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert dict(info.value.trailing_metadata())["x-request-id"] == "trace-me"


def test_disabling_request_id_plugin_removes_the_trailer(blazerpc_serve: Any, blazerpc_connect: Any) -> None:
    conn = blazerpc_connect(blazerpc_serve(add_app(), disabled=["request-id"]))
    response, rpc = call(conn, a=2, b=3)
    assert response.result == 5
    assert "x-request-id" not in dict(rpc.trailing_metadata())


def test_invalid_trailing_metadata_from_a_middleware_does_not_hide_the_status(blazerpc_serve, blazerpc_connect):
    """Tried: a non-ASCII value with a newline, and a reserved ``grpc-`` key, set by a buggy middleware."""

    class Sloppy:
        async def __call__(self, ctx, call_next):
            ctx.trailing_metadata.update({"x-note": "naïve\n", "grpc-status": "0"})
            return await call_next(ctx)

    class SloppyPlugin:
        @hookimpl
        def blazerpc_middleware(self, settings):
            return [Sloppy()]

    app = BlazeApp()

    @app.model("div")
    def div(a: float, b: float) -> float:
        return a / b

    conn = blazerpc_connect(blazerpc_serve(app, plugins=[SloppyPlugin()]))
    assert conn.stub.PredictDiv(conn.pb2.DivRequest(a=1, b=2), timeout=5).result == 0.5
    with pytest.raises(grpc.RpcError) as info:
        conn.stub.PredictDiv(conn.pb2.DivRequest(a=1, b=0), timeout=5)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "ZeroDivisionError" in info.value.details()
