"""The app `benchmarks/bench_streaming.py` serves: the streaming half of the bench contract.

``tokens`` matches ``PredictTokens(TokensRequest{int64 n}) returns (stream TokensResponse)``
in ``benchmarks/protos/bench.proto`` and yields what the raw baseline sends; ``add`` is
there for the harness's readiness probe and as the unary latency reference.

    blazerpc serve benchmarks/apps/streaming_app.py --port 50051
"""

from __future__ import annotations

from collections.abc import Iterator

from blazerpc_core import BlazeApp, InvalidArgument

MAX_TOKENS = 1_000_000  # the raw baseline's limit: a bad request must not stream forever

app = BlazeApp()


@app.model("tokens")
def tokens(n: int) -> Iterator[str]:
    """n short strings, as a text generator would yield tokens."""
    if not 0 <= n <= MAX_TOKENS:
        raise InvalidArgument(f"n must be in [0, {MAX_TOKENS}]")
    for i in range(n):
        yield f"tok{i}"


@app.model("add")
def add(a: float, b: float) -> float:
    return a + b
