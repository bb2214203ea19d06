"""``apps/bench_app.py``'s models with batching off (``batch=False``): the unbatched configuration.

The same function objects, so any difference in the numbers is the batcher's.

    blazerpc serve benchmarks/apps/unbatched_app.py --port 50051
"""

from __future__ import annotations

from benchmarks.apps import bench_app
from blazerpc_core import BlazeApp

app = BlazeApp()
app.model("add")(bench_app.add)
app.model("classify", batch=False)(bench_app.classify)
app.model("slow", batch=False)(bench_app.slow)
