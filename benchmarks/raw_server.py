"""Hand-written grpclib server for the bench contract: the baseline blazerpc must beat.

It does exactly the model work the blazerpc benchmark app does (``benchmarks/model.py``),
with no framework layer in between, so any gap in the numbers is framework overhead.

    python benchmarks/raw_server.py --port 50051

Prints ``READY <host>:<port> pid=<pid>`` once listening; exits cleanly on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

if not __package__:  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import model
from benchmarks.stubs import Stubs, array_to_tensor, load_stubs, tensor_to_array

MAX_TOKENS = 1_000_000  # keeps a bad request from streaming forever


def make_servicer(stubs: Stubs, executor: ThreadPoolExecutor) -> Any:
    """Build the servicer from the generated grpclib base class.

    The base class only exists after run-time compilation, so the subclass is
    defined here rather than at module level.
    """
    pb2 = stubs.pb2

    def _matrix(tensor: Any, cols: int | None, name: str) -> np.ndarray[Any, Any]:
        try:
            x = tensor_to_array(tensor)
        except (TypeError, ValueError) as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, f"bad tensor {name}: {exc}") from exc
        if x.ndim != 2 or (cols is not None and x.shape[1] != cols):
            raise GRPCError(Status.INVALID_ARGUMENT, f"{name} must be (rows, {cols}), got {x.shape}")
        return x

    class RawInferenceService(stubs.grpclib.InferenceServiceBase):  # type: ignore[misc,name-defined]
        """All four rpcs; Slow (the accelerator-like model) runs in a thread pool so the loop keeps serving."""

        async def PredictAdd(self, stream: Any) -> None:
            req = await stream.recv_message()
            await stream.send_message(pb2.AddResponse(result=req.a + req.b))

        async def PredictClassify(self, stream: Any) -> None:
            req = await stream.recv_message()
            x = _matrix(req.x, model.COLS, "x")
            out = model.matmul(x)
            await stream.send_message(pb2.ClassifyResponse(result=array_to_tensor(pb2, out)))

        async def PredictSlow(self, stream: Any) -> None:
            req = await stream.recv_message()
            x = _matrix(req.x, model.COLS, "x")
            loop = asyncio.get_running_loop()
            out = await loop.run_in_executor(executor, model.accelerator, x)
            await stream.send_message(pb2.SlowResponse(result=array_to_tensor(pb2, out)))

        async def PredictTokens(self, stream: Any) -> None:
            req = await stream.recv_message()
            if not 0 <= req.n <= MAX_TOKENS:
                raise GRPCError(Status.INVALID_ARGUMENT, f"n must be in [0, {MAX_TOKENS}]")
            for i in range(req.n):
                await stream.send_message(pb2.TokensResponse(result=f"tok{i}"))

    return RawInferenceService()


async def serve(host: str, port: int, threads: int, shutdown_timeout: float) -> None:
    """Listen until SIGTERM/SIGINT, then stop accepting and drain for a bounded time."""
    stubs = load_stubs()
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="slow")
    server = Server([make_servicer(stubs, executor)])
    await server.start(host, port)
    bound = port
    raw = getattr(server, "_server", None)  # grpclib keeps the asyncio server private
    if port == 0 and raw is not None and raw.sockets:
        bound = raw.sockets[0].getsockname()[1]

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {host}:{bound} pid={os.getpid()}", flush=True)

    await stop.wait()
    server.close()
    try:
        await asyncio.wait_for(server.wait_closed(), shutdown_timeout)
    except TimeoutError:
        print("shutdown timed out; exiting anyway", file=sys.stderr, flush=True)
    executor.shutdown(wait=False, cancel_futures=True)
    print("STOPPED", flush=True)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description="Raw grpclib baseline server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument(
        "--threads",
        type=int,
        default=32,
        help="thread pool size for PredictSlow (bounds its concurrency; default 32)",
    )
    parser.add_argument("--shutdown-timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.threads, args.shutdown_timeout))


if __name__ == "__main__":
    main()
