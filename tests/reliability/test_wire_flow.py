"""Flow-control windows: one stalled stream must not hold up the other calls on its connection.

grpclib's defaults give a stream the whole connection window (4 MiB each), so a client
stream whose model has not started reading filled the connection and every other call on
it waited for that model (3 s measured). Here a stream gets a small share of a much larger
connection window.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

from grpclib.client import Channel
from grpclib.const import Cardinality

from blazerpc_core import BlazeApp
from blazerpc_core.testing import compile_stubs, start_server

CHUNK = 128 * 1024
#: What the stalled call tries to send: more than grpclib's old 4 MiB windows.
STALLED_BYTES = 6 * 1024 * 1024
#: How long the stalled model waits before it reads, at most.
STALL = 3.0


def make_app(release: threading.Event) -> BlazeApp:
    app = BlazeApp()

    @app.model("slow-total")
    async def slow_total(chunks: AsyncIterator[bytes]) -> int:
        for _ in range(int(STALL / 0.01)):
            if release.is_set():
                break
            await asyncio.sleep(0.01)
        return sum([len(chunk) async for chunk in chunks])

    @app.model("double")
    def double(x: int) -> int:
        return 2 * x

    return app


def test_a_stalled_stream_does_not_delay_a_call_on_the_same_connection() -> None:
    release = threading.Event()
    server = start_server(make_app(release))
    try:
        pb2 = compile_stubs(server.proto_text).pb2

        async def main() -> tuple[float, int]:
            async with Channel("127.0.0.1", server.port) as channel:  # one connection for both calls
                stalled = channel.request(
                    "/blazerpc.InferenceService/PredictSlowTotal", Cardinality.STREAM_UNARY,
                    pb2.SlowTotalRequest, pb2.SlowTotalResponse, timeout=20,
                )
                async with stalled:
                    await stalled.send_request()

                    async def feed() -> None:
                        for _ in range(STALLED_BYTES // CHUNK):
                            await stalled.send_message(pb2.SlowTotalRequest(chunks=b"x" * CHUNK))
                        await stalled.end()

                    feeding = asyncio.create_task(feed())
                    await asyncio.sleep(0.5)  # the stalled stream takes all the window it can get
                    assert not feeding.done(), "the model read nothing, so flow control must hold the sender"
                    started = time.monotonic()
                    reply = await channel.request(
                        "/blazerpc.InferenceService/PredictDouble", Cardinality.UNARY_UNARY,
                        pb2.DoubleRequest, pb2.DoubleResponse, timeout=10,
                    ).__aenter__()
                    async with reply:
                        await reply.send_message(pb2.DoubleRequest(x=21), end=True)
                        answer = await reply.recv_message()
                    took = time.monotonic() - started
                    assert answer is not None and answer.result == 42
                    release.set()
                    await feeding
                    total = await stalled.recv_message()
                    assert total is not None
                    return took, total.result

        took, total = asyncio.run(main())
        assert total == (STALLED_BYTES // CHUNK) * CHUNK
        # Before: the second call waited for the stalled model (about STALL seconds).
        assert took < 1.0, f"the second call took {took:.2f}s"
    finally:
        release.set()
        server.stop(grace_period=5)
