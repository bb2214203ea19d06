"""The app every replica in the deploy tests serves: it says which replica answered.

``DEPLOY_TEST_REPLICA`` (set per process by the tests) names the replica.
"""

import asyncio
import os
from dataclasses import dataclass

from blazerpc_core import BlazeApp

app = BlazeApp()
REPLICA = os.environ.get("DEPLOY_TEST_REPLICA", "unnamed")


@dataclass
class Echo:
    x: int
    replica: str
    pid: int


@app.model("echo")
async def echo(x: int, sleep_ms: float = 0.0) -> Echo:
    """``x`` back with the replica's name and process, after ``sleep_ms`` (so calls overlap a shutdown)."""
    if sleep_ms > 0:
        await asyncio.sleep(sleep_ms / 1000)
    return Echo(x=x, replica=REPLICA, pid=os.getpid())


@app.model("text")
def text(words: list[str], repeat: int) -> str:
    """A long, very compressible answer (for gzip through the proxies)."""
    return " ".join(words) * repeat
