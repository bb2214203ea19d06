"""Shared pieces of the benchmark suite: targets and verdicts, metrics scraping, noise.

Every scenario measures blazerpc against a baseline started in the same run, so a
verdict is a ratio of two numbers taken minutes apart under the same background load,
never a comparison with a number from another day.
"""

from __future__ import annotations

import contextlib
import re
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from benchmarks.harness import (
    HOST,
    NOISY,
    ServerProcess,
    machine_busy_seconds,
    median_row,
    result_row,
)
from benchmarks.loadgen import LoadConfig, run_load

#: Extra environment of benchmark servers (the framework plugins import their frameworks lazily).
SERVER_ENV: dict[str, str] = {}


def blazerpc_cmd(target: str, *flags: str, defaults: bool = False) -> str:
    """A ``blazerpc serve`` command line for the harness (``{python}``/``{port}`` expanded there).

    Tuned for measuring (the default here): ``--log-level WARNING``, no access log line per call.
    ``defaults``: what a user runs, the command line's defaults (``--log-level INFO``).
    """
    extra = " ".join(flags if defaults else ("--log-level", "WARNING", *flags))
    return f"{{python}} -m blazerpc_core.cli serve {target} --port {{port}} {extra}".strip()


# --------------------------------------------------------------------------- verdicts


@dataclass
class Check:
    """One target: what was measured, against what, and whether it was met.

    ``met`` is None for rows reported without a target (context for the reader).
    """

    scenario: str
    name: str
    value: float
    baseline: float | None
    ratio: float | None
    target: str
    met: bool | None
    unit: str = ""
    note: str = ""

    @property
    def verdict(self) -> str:
        """PASS / MISS, or "info" for rows without a target."""
        return "info" if self.met is None else ("PASS" if self.met else "MISS")


@dataclass
class ScenarioResult:
    """What one scenario produced: flat rows for the JSON, checks for the summary."""

    key: str
    title: str
    rows: list[dict[str, Any]]
    checks: list[Check]
    meta: dict[str, Any] = field(default_factory=dict)
    columns: Sequence[str] | None = None

    def noisy(self) -> bool:
        """True when another process used >= NOISY cores during any measured window."""
        return any(float(r.get("other_cpu") or 0.0) >= NOISY for r in self.rows)

    def max_other_cpu(self) -> float:
        """The worst background load seen by any row (to pick the quieter of two attempts)."""
        return max((float(r.get("other_cpu") or 0.0) for r in self.rows), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, checks included with their verdicts."""
        return {
            "key": self.key,
            "title": self.title,
            "meta": self.meta,
            "checks": [asdict(c) | {"verdict": c.verdict} for c in self.checks],
            "rows": self.rows,
        }


def ratio(num: float | None, den: float | None) -> float | None:
    """num / den, or None when either side is missing or the denominator is zero."""
    if num is None or den is None or den == 0:
        return None
    return num / den


def _bound_check(
    scenario: str,
    name: str,
    value: float,
    baseline: float | None,
    target: float,
    *,
    upper: bool,
    unit: str,
    note: str,
    paired: float | None,
) -> Check:
    """``value / baseline`` (or ``value`` alone with no baseline) against ``target``, from above or below."""
    r = paired if paired is not None else ratio(value, baseline) if baseline is not None else None
    measured = r if baseline is not None else value
    met = None if measured is None else (measured <= target if upper else measured >= target)
    sign = "<=" if upper else ">="
    absolute = f"{target:g}" if upper else f"{target:,.0f}"
    shown = f"{sign} {target:g}x" if baseline is not None else f"{sign} {absolute} {unit}".rstrip()
    return Check(scenario, name, value, baseline, r, shown, met, unit, note)


def at_least(
    scenario: str,
    name: str,
    value: float,
    baseline: float | None,
    target: float,
    *,
    unit: str = "",
    note: str = "",
    paired: float | None = None,
) -> Check:
    """A check that ``value / baseline`` (or ``value`` alone with no baseline) is >= target.

    ``paired`` replaces value / baseline with a better estimate of it (see paired_ratio).
    """
    return _bound_check(scenario, name, value, baseline, target, upper=False, unit=unit, note=note, paired=paired)


def at_most(
    scenario: str,
    name: str,
    value: float,
    baseline: float | None,
    target: float,
    *,
    unit: str = "",
    note: str = "",
    paired: float | None = None,
) -> Check:
    """A check that ``value / baseline`` (or ``value`` alone with no baseline) is <= target."""
    return _bound_check(scenario, name, value, baseline, target, upper=True, unit=unit, note=note, paired=paired)


def info(
    scenario: str,
    name: str,
    value: float,
    baseline: float | None,
    *,
    unit: str = "",
    note: str = "",
    paired: float | None = None,
) -> Check:
    """A reported ratio without a target."""
    r = paired if paired is not None else ratio(value, baseline)
    return Check(scenario, name, value, baseline, r, "-", None, unit, note)


def median(values: Sequence[float]) -> float:
    """The middle value (the mean of the two middle ones for an even count)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def paired_ratio(ours: dict[str, Any], base: dict[str, Any], key: str = "rps") -> tuple[float | None, list[float]]:
    """Median over repeats of ours[i] / base[i], and the per-repeat ratios.

    Servers alternate within each repeat (A, B, A, B, ...), so repeat i of both sides
    saw the same moment's background load; the machine's speed drifts by 10-30 % over
    a minute even when no other process shows up in other_cpu (a shared VM host), and
    pairing cancels that drift where a ratio of two independent medians does not.
    Falls back to the plain ratio for rows measured once.
    """
    a, b = ours.get("repeats"), base.get("repeats")
    if not a or not b or len(a) != len(b):
        r = ratio(ours.get(key), base.get(key))
        return r, [] if r is None else [r]
    pairs = [x[key] / y[key] for x, y in zip(a, b, strict=True) if y.get(key) and x.get(key) is not None]
    if not pairs:
        return None, []
    return median(pairs), sorted(pairs)


def per_repeat(row: dict[str, Any], fn: Any) -> tuple[float, list[float]]:
    """Median over a row's repeats of ``fn(repeat)`` (e.g. p99 / p50), and every value."""
    repeats = row.get("repeats") or [row]
    values = [float(fn(r)) for r in repeats]
    return median(values), values


def client_bound(*rows: dict[str, Any]) -> bool:
    """True when the load generator, not the server, was the limit of any of these rows.

    Saturated (``limit`` says client), or the busier side at >= 0.75 of its core: on a shared
    machine neither side may reach the 90 % mark, and then the busier one is the limit.
    """
    def busier_client(row: dict[str, Any]) -> bool:
        client, server = float(row.get("client_cpu") or 0), float(row.get("server_cpu") or 0)
        return client >= 0.75 and client > server

    return any("client" in str(r.get("limit", "")) or busier_client(r) for r in rows)


def throughput_check(
    scenario: str,
    name: str,
    ours: dict[str, Any],
    base: dict[str, Any],
    target: float,
    *,
    key: str = "rps",
    unit: str = "req/s",
    note: str = "",
) -> Check:
    """``ours`` >= ``target`` x ``base`` in throughput, as a paired ratio of the same run.

    When either side was client-bound its throughput measures the load generator, so the
    verdict then uses server capacity instead: the paired ratio of server CPU per
    request, base / ours (what each server would serve on its core). Both are in the note.
    """
    paired, each = paired_ratio(ours, base, key)
    cost, _ = paired_ratio(base, ours, "server_us_per_op")
    parts = [f"paired {[round(x, 2) for x in each]}",
             f"server us/op {ours.get('server_us_per_op')} vs {base.get('server_us_per_op')} "
             f"(capacity ratio {cost:.2f}x)" if cost else "",
             f"limit {ours.get('limit')} / {base.get('limit')}"]
    if client_bound(ours, base) and cost is not None:
        parts.insert(0, "client-bound: judged on server CPU per op")
        paired = cost
    text = "; ".join(p for p in (*parts, note) if p)
    return at_least(scenario, name, float(ours[key]), float(base[key]), target, unit=unit, note=text, paired=paired)


# --------------------------------------------------------------------------- rows


def pick(rows: Iterable[dict[str, Any]], **match: Any) -> dict[str, Any]:
    """The one row whose fields equal ``match`` (KeyError naming it otherwise)."""
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    if len(found) != 1:
        raise KeyError(f"expected one row with {match}, found {len(found)}")
    return found[0]


def collapse_repeats(rows: list[dict[str, Any]], keys: Sequence[str] = ("server", "scenario", "concurrency")) -> list[
    dict[str, Any]
]:
    """Rows measured several times with the same keys become their median-rps row.

    The harness interleaves servers within each config, so repeated configs in one
    run_comparison call give A, B, A, B, ... which is what we want on a shared machine.
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    out = []
    for group in groups.values():
        if len(group) == 1:
            out.append(group[0])
        else:
            merged = median_row(group)
            merged["other_cpu_repeats"] = [r["other_cpu"] for r in group]
            out.append(merged)
    return out


# --------------------------------------------------------------------------- metrics


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$')


def scrape(port: int, host: str = HOST, timeout: float = 2.0) -> Samples:
    """Prometheus text exposition → {(metric, labels): value}."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m["labels"] or ""))
        with contextlib.suppress(ValueError):
            out[m["name"], labels] = float(m["value"])
    return out


def metric_total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def delta(before: Sequence[Samples], after: Sequence[Samples], name: str, **labels: str) -> float:
    """Growth of a counter between two sets of scrapes (one per worker port), summed."""
    pairs = zip(before, after, strict=True)
    return sum(metric_total(a, name, **labels) - metric_total(b, name, **labels) for b, a in pairs)


def batch_stats(before: Sequence[Samples], after: Sequence[Samples], model: str) -> dict[str, float]:
    """Batches and mean rows per batch of ``model`` between two scrapes (blazerpc_batch_size)."""
    rows = delta(before, after, "blazerpc_batch_size_sum", model=model)
    batches = delta(before, after, "blazerpc_batch_size_count", model=model)
    return {"batches": batches, "mean_rows_per_batch": rows / batches if batches else 0.0}


def measure_with_metrics(
    server: ServerProcess,
    cfg: LoadConfig,
    metrics_ports: Sequence[int] = (),
    *,
    model: str | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """harness.measure plus a /metrics scrape at each edge of the measured window.

    Scraping at the window edges (not around the whole run) keeps the loadgen's
    one-at-a-time validation calls, which make batches of one, out of rows/batch.
    Adds ``mean_rows_per_batch`` / ``batches`` for ``model``.
    """
    marks: dict[str, tuple[float, float]] = {}
    scrapes: dict[str, list[Samples]] = {}

    def on_window(edge: Literal["start", "end"]) -> None:
        marks[edge] = (server.cpu_seconds(), machine_busy_seconds())
        scrapes[edge] = [scrape(p) for p in metrics_ports]

    res = run_load(replace(cfg, target=server.address), on_window=on_window)
    server_cpu = (marks["end"][0] - marks["start"][0]) / cfg.duration
    machine_cpu = (marks["end"][1] - marks["start"][1]) / cfg.duration
    row = result_row(server, res, server_cpu, machine_cpu)
    if metrics_ports and model is not None:
        row.update({k: round(v, 2) for k, v in batch_stats(scrapes["start"], scrapes["end"], model).items()})

    if verbose:
        extra = f" rows/batch={row['mean_rows_per_batch']:.1f}" if "mean_rows_per_batch" in row else ""
        print(
            f"  [{server.name}] {cfg.scenario()} c={cfg.concurrency} rps={row['rps']:.0f} p50={row['p50_ms']:.2f}ms "
            f"p99={row['p99_ms']:.2f}ms errors={row['errors']} server_cpu={row['server_cpu']:.2f} "
            f"client_cpu={row['client_cpu']:.2f} other_cpu={row['other_cpu']:.2f} limit={row['limit']}{extra}",
            flush=True,
        )
    return row
