"""PNG plots of a suite run, written next to its JSON (matplotlib, only in the bench sessions).

* ``<scenario>.png`` for a concurrency sweep (``matmul``, ``peers``): req/s and p99 against
  concurrency, one line per server;
* ``<scenario>.png`` for a one-load comparison (``accelerator``, ``peers-accelerator``):
  req/s per server with the gain over the unbatched server.

The suite draws them as it goes; ``python -m benchmarks.plots [RESULTS_DIR]`` draws them
again from the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SWEEPS = ("matmul", "peers")
BARS = ("accelerator", "peers-accelerator")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def sweep(rows: Sequence[dict[str, Any]], path: Path, title: str, subtitle: str = "") -> Path:
    """req/s and p99 against concurrency, one line per server; returns ``path``."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    servers = list(dict.fromkeys(r["server"] for r in rows))
    for server in servers:
        mine = sorted((r for r in rows if r["server"] == server), key=lambda r: r["concurrency"])
        xs = [r["concurrency"] for r in mine]
        style = "--" if "raw" in server else "-"
        left.plot(xs, [r["rps"] for r in mine], style, marker="o", label=server)
        right.plot(xs, [r["p99_ms"] for r in mine], style, marker="o", label=server)
    for ax, label in ((left, "requests/s (median repeat)"), (right, "p99 latency, ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["concurrency"] for r in rows}))
        ax.get_xaxis().set_major_formatter(plt.ScalarFormatter())
        ax.set_xlabel("concurrency (calls in flight)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    left.legend(fontsize=8)
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bars(rows: Sequence[dict[str, Any]], path: Path, title: str, subtitle: str = "") -> Path:
    """req/s per server (p99 and batch size in the label), gain over the last bar on each; returns ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    names = [r["server"] for r in rows]
    values = [r["rps"] for r in rows]
    base = values[-1] or 1.0
    shown = ax.bar(names, values, color=["#3b7dd8" if "blazerpc" in n else "#999999" for n in names])
    for bar, row in zip(shown, rows, strict=True):
        batch = f", batch {row['mean_rows_per_batch']:.1f}" if row.get("mean_rows_per_batch") else ""
        ax.annotate(f"{row['rps']:,.0f} req/s ({row['rps'] / base:.1f}x)\np99 {row['p99_ms']:.0f} ms{batch}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("requests/s at c=64 (median repeat)")
    ax.set_ylim(0, max(values) * 1.25 if values else 1)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw(key: str, title: str, rows: Sequence[dict[str, Any]], out_dir: Path, when: str = "") -> list[Path]:
    """The PNG of scenario ``key`` (none for scenarios without a picture)."""
    noise = max((float(r.get("other_cpu") or 0.0) for r in rows), default=0.0)
    note = f"server on 1 core, grpc.aio load on the other; max other_cpu {noise:.2f} cores" + (f"; {when}" if when
                                                                                                 else "")
    path = out_dir / f"{key}.png"
    if key in SWEEPS:
        return [sweep([r for r in rows if r.get("concurrency")], path, title, note)]
    if key in BARS:
        ordered = sorted(rows, key=lambda r: -r["rps"])
        ordered = [r for r in ordered if r["server"] != "blazerpc-unbatched"] + \
            [r for r in ordered if r["server"] == "blazerpc-unbatched"]
        return [bars(ordered, path, title, note)]
    return []


def main(argv: list[str] | None = None) -> int:
    """CLI: redraw every picture from the JSON in a results directory."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results", type=Path, nargs="?", default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    for key in (*SWEEPS, *BARS):
        path = args.results / f"{key}.json"
        if path.exists():
            doc = json.loads(path.read_text())
            for out in draw(key, doc["meta"].get("title", key), doc["runs"], args.results,
                            doc["system"]["timestamp"][:10]):
                print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
