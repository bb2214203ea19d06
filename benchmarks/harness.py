"""Start a server under test from a command line, drive it with the loadgen, record results.

A server under test is only "a command line that listens on a port": the
command may contain ``{port}``, ``{host}`` and ``{python}`` placeholders
(if it has no ``{port}``, ``--port N`` is appended). It is run from the repo
root, in its own session (so its children can be stopped too), optionally
pinned to CPU 0 so the load generator gets the other core(s).

    python benchmarks/harness.py --name raw \\
        --server raw="{python} benchmarks/raw_server.py --port {port}" \\
        --method add --concurrency 1,16,64 --duration 3
"""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import datetime as dt
import fcntl
import functools
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

if not __package__:  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.loadgen import (
    METHODS,
    TENSOR_METHODS,
    LoadConfig,
    LoadgenError,
    LoadResult,
    build_arg_parser,
    check_loopback,
    format_result,
    matrix_configs,
    parse_cpus,
    run_load,
)
from benchmarks.stubs import BENCH_DIR, load_stubs

REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
LOG_DIR = RESULTS_DIR / "logs"
HOST = "127.0.0.1"
DEFAULT_SERVER_CPUS: tuple[int, ...] = (0,)
# The hand-written baseline, as a server command line (run from the repo root).
RAW_SERVER_CMD = "{python} benchmarks/raw_server.py --port {port}"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Machine-wide lock held while a harness run measures (see bench_lock).
LOCK_PATH = Path(os.environ.get("BLAZERPC_BENCH_LOCK", "/tmp/blazerpc-bench.lock"))
LOCK_TIMEOUT_S = 900.0

ServerCommand = str | Sequence[str]


class ServerStartError(RuntimeError):
    """The server exited, or did not answer the probe, before the deadline."""


# --------------------------------------------------------------------------- servers


def free_port(host: str = HOST) -> int:
    """Ask the kernel for an unused TCP port (tiny race, fine on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def format_command(cmd: ServerCommand, port: int, host: str = HOST) -> list[str]:
    """Expand placeholders; append ``--port`` when the command does not mention it."""
    argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    subs = {"{port}": str(port), "{host}": host, "{python}": sys.executable}
    has_port = any("{port}" in a for a in argv)
    out = []
    for arg in argv:
        for key, value in subs.items():
            arg = arg.replace(key, value)
        out.append(arg)
    if not has_port:
        out += ["--port", str(port)]
    return out


def _children(pid: int) -> list[int]:
    """All descendants of ``pid`` (from /proc), so forked workers count too."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, all its threads (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat, not idle/iowait)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    ticks = [int(v) for v in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    # guest time is already counted in user/nice
    return (sum(ticks[:8]) - idle) / CLK_TCK


def _rss_mib(pid: int) -> float:
    """Resident memory of one live process in MiB (0 if it is gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class ServerProcess:
    """A running server under test; use as a context manager to guarantee stop()."""

    name: str
    argv: list[str]
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    cpus: list[int] | None
    _log_file: Any = field(repr=False, default=None)
    started_at: float = field(default_factory=time.monotonic)
    ready_s: float = 0.0  # spawn to first correct answer
    idle_rss_mib: float = 0.0  # memory of the process tree right after it became ready

    @property
    def address(self) -> str:
        """host:port for clients."""
        return f"{self.host}:{self.port}"

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server and its live descendants."""
        return sum(cpu_seconds(p) for p in [self.proc.pid, *_children(self.proc.pid)])

    def rss_mib(self) -> float:
        """Resident memory of the server and its live descendants, in MiB."""
        return sum(_rss_mib(p) for p in [self.proc.pid, *_children(self.proc.pid)])

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the server's combined stdout/stderr."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL the whole process group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        # Leftover children (e.g. worker processes) share the session/group id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.proc.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


Probe = Literal["add", "oip", "connect"]


async def _probe_once(host: str, port: int, probe: Probe) -> None:
    """One readiness check with grpclib (keeps the gRPC C core out of this process).

    ``add``: a real ``PredictAdd(1, 2)`` answers 3; ``oip``: a real Open Inference Protocol
    ``ModelInfer`` of ``classify`` answers ``x @ W`` (a server that says "ready" before its
    model can answer does not count); ``connect``: the port accepts TCP.
    """
    if probe == "connect":
        _, writer = await asyncio.open_connection(host, port)
        writer.close()
        await writer.wait_closed()
        return
    from grpclib.client import Channel, UnaryUnaryMethod

    channel = Channel(host, port)
    try:
        if probe == "oip":
            from benchmarks import model
            from benchmarks.loadgen import oip_messages

            pb = oip_messages()
            x = model.request_rows(0, 1)[0]
            call = UnaryUnaryMethod(channel, "/inference.GRPCInferenceService/ModelInfer", pb.ModelInferRequest,
                                    pb.ModelInferResponse)
            request = pb.ModelInferRequest(model_name="classify", raw_input_contents=[x.tobytes()],
                                           inputs=[{"name": "x", "datatype": "FP32", "shape": [1, model.COLS]}])
            answer = await asyncio.wait_for(call(request), 5.0)
            got = np.frombuffer(answer.raw_output_contents[0], "<f4") if answer.raw_output_contents else \
                np.asarray(answer.outputs[0].contents.fp32_contents, np.float32)
            if not model.close_enough(got.reshape(1, -1), model.matmul(x)):
                raise ServerStartError("probe ModelInfer(classify) answered something else than x @ W")
            return
        stubs = load_stubs()
        stub = stubs.grpclib.InferenceServiceStub(channel)
        reply = await asyncio.wait_for(stub.PredictAdd(stubs.pb2.AddRequest(a=1, b=2)), 2.0)
        if reply.result != 3:
            raise ServerStartError(f"probe PredictAdd(1, 2) returned {reply.result}")
    finally:
        channel.close()


def wait_ready(
    server: ServerProcess,
    timeout: float = 60.0,
    probe: Probe = "add",
) -> float:
    """Poll until the server answers a real call (see _probe_once); return seconds since spawn."""
    t0 = server.started_at
    last: BaseException | None = None
    while time.monotonic() - t0 < timeout:
        if server.proc.poll() is not None:
            raise ServerStartError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            asyncio.run(_probe_once(server.host, server.port, probe))
            return time.monotonic() - t0
        except (
            OSError,
            TimeoutError,
            GRPCError,
            StreamTerminatedError,
            ProtocolError,
        ) as exc:
            last = exc  # refused, reset, not serving yet: poll again
        time.sleep(0.02)  # ready times are judged to a tenth of a second
    raise ServerStartError(f"{server.name} not ready after {timeout}s (last error: {last!r}):\n{server.log_tail()}")


@functools.cache
def compile_sources(root: Path) -> None:
    """Write the bytecode of the checkout at ``root`` once, before any server from it is timed.

    An installed package comes with its bytecode (pip compiles on install); a checkout run
    with ``PYTHONDONTWRITEBYTECODE`` set (as in deploy/Dockerfile, or a developer's shell)
    would otherwise compile every module on every start, about 0.1 s of "time to ready" that
    no deployment pays. Both sides of a comparison get the same treatment.
    """
    for package in ("blazerpc_core", "benchmarks", "plugins", "examples"):
        if (root / package).is_dir():
            compileall.compile_dir(root / package, quiet=1)


def start_server(
    cmd: ServerCommand,
    *,
    name: str = "server",
    port: int | None = None,
    host: str = HOST,
    pin: bool = True,
    server_cpus: Sequence[int] = DEFAULT_SERVER_CPUS,
    ready_timeout: float = 60.0,
    probe: Probe = "add",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log_dir: Path = LOG_DIR,
) -> ServerProcess:
    """Launch ``cmd`` on a free loopback port and return once it serves gRPC.

    With ``pin`` the server runs under ``taskset -c <server_cpus>`` (or
    sched_setaffinity in the child if taskset is missing).
    """
    check_loopback(f"{host}:0")
    port = port or free_port(host)
    argv = format_command(cmd, port, host)
    cpus = sorted(set(server_cpus)) if pin else None
    preexec = None
    if cpus is not None:
        if shutil.which("taskset"):
            argv = ["taskset", "-c", ",".join(map(str, cpus)), *argv]
        else:
            pinned = set(cpus)

            def preexec() -> None:
                os.sched_setaffinity(0, pinned)

    compile_sources(cwd or REPO_ROOT)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    log_file = log_path.open("wb")
    spawned = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=cwd or REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=preexec,
    )
    server = ServerProcess(name, argv, host, port, proc, log_path, cpus, log_file, started_at=spawned)
    try:
        server.ready_s = wait_ready(server, ready_timeout, probe)
        server.idle_rss_mib = server.rss_mib()
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def running_server(cmd: ServerCommand, **kwargs: Any) -> Iterator[ServerProcess]:
    """``with running_server(cmd) as srv:`` -- always stopped on exit."""
    server = start_server(cmd, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def client_cpus(server_cpus: Sequence[int] | None) -> list[int] | None:
    """CPUs left for the load generator once the server has its own."""
    if not server_cpus:
        return None
    rest = sorted(os.sched_getaffinity(0) - set(server_cpus))
    return rest or None


# --------------------------------------------------------------------------- measuring


BUSY = 0.9  # a side using >= 90% of its cores is treated as the limit
NOISY = 0.2  # other processes using >= 0.2 cores during a window make it unreliable


def bottleneck(server_cpu: float, server_cores: int, client_cpu: float, client_cores: int) -> str:
    """Name the saturated side, so a client-bound number is never read as a server's.

    "-" means neither side was CPU-bound (latency- or sleep-bound, e.g. c=1).
    """
    sides = []
    if server_cpu >= BUSY * server_cores:
        sides.append("server")
    if client_cpu >= BUSY * client_cores:
        sides.append("client")
    return "+".join(sides) or "-"


def measure(server: ServerProcess, cfg: LoadConfig, *, verbose: bool = False) -> dict[str, Any]:
    """Run one load config against ``server``; return a flat row incl. CPU use."""
    marks: dict[str, tuple[float, float]] = {}

    def on_window(edge: Literal["start", "end"]) -> None:
        marks[edge] = (server.cpu_seconds(), machine_busy_seconds())

    res = run_load(replace(cfg, target=server.address), on_window=on_window)
    server_cpu = (marks["end"][0] - marks["start"][0]) / cfg.duration
    machine_cpu = (marks["end"][1] - marks["start"][1]) / cfg.duration
    row = result_row(server, res, server_cpu, machine_cpu)
    if verbose:
        print(
            f"  {format_result(res)} server_cpu={server_cpu:.2f} other_cpu={row['other_cpu']:.2f} limit={row['limit']}",
            flush=True,
        )
    return row


def result_row(server: ServerProcess, res: LoadResult, server_cpu: float, machine_cpu: float) -> dict[str, Any]:
    """Flatten a LoadResult into the table/JSON row.

    CPU figures are cores used during the window (1.0 = one core fully busy);
    client_cpu sums all load-generator processes; other_cpu is everything else
    on the machine (other users' builds and tests), i.e. how noisy the run was.
    """
    cfg = res.config
    all_cpus = len(os.sched_getaffinity(0))
    server_cores = len(server.cpus) if server.cpus else all_cpus
    client_cores = len(cfg.cpus) if cfg.cpus else all_cpus
    client_cpu = sum(res.client_cpu)
    if not server.cpus and not cfg.cpus:  # sharing every core: only the total means much
        limit = bottleneck(server_cpu + client_cpu, all_cpus, 0.0, 1)
        limit = "machine" if limit == "server" else limit
    else:
        limit = bottleneck(server_cpu, server_cores, client_cpu, client_cores)
    ops_per_s = res.items_per_s if METHODS[cfg.scenario()][1] else res.rps
    other_cpu = max(0.0, machine_cpu - server_cpu - client_cpu)
    if other_cpu >= NOISY:
        limit += " (noisy)"
    return {
        "server": server.name,
        "scenario": cfg.scenario(),
        "rows": cfg.rows if cfg.scenario() in TENSOR_METHODS else None,
        "tokens": cfg.tokens if METHODS[cfg.scenario()][1] else None,
        "concurrency": cfg.concurrency,
        "processes": cfg.processes,
        "rps": round(res.rps, 1),
        "p50_ms": round(res.p50_ms, 3),
        "p90_ms": round(res.p90_ms, 3),
        "p99_ms": round(res.p99_ms, 3),
        "errors": res.error_count,
        "server_cpu": round(server_cpu, 3),
        "client_cpu": round(client_cpu, 3),
        "other_cpu": round(other_cpu, 3),
        "limit": limit,
        # Server CPU per request (per item when streaming): comparable between
        # servers even when the client, not the server, limited throughput.
        "server_us_per_op": round(server_cpu * 1e6 / ops_per_s, 1) if ops_per_s else None,
        "items_per_s": round(res.items_per_s, 1),
        "ttfi_p50_ms": round(res.ttfi_p50_ms, 3),
        "result": res.to_dict(),
    }


def median_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The repeat with the median throughput, carrying every repeat (in measuring order).

    A real run (not averaged percentiles) keeps latency and rps consistent. ``repeats``
    holds each repeat's flat row (without the raw ``result``), so ratios can be paired
    repeat by repeat on any column (rps, p50_ms, server_us_per_op, ...).
    """
    ranked = sorted(rows, key=lambda r: r["rps"])
    row = dict(ranked[(len(ranked) - 1) // 2])
    row["rps_repeats"] = [r["rps"] for r in rows]
    row["repeats"] = [{k: v for k, v in r.items() if k not in ("result", "repeats")} for r in rows]
    return row


@contextlib.contextmanager
def bench_lock(path: Path = LOCK_PATH, timeout: float = LOCK_TIMEOUT_S) -> Iterator[bool]:
    """Serialise harness runs machine-wide (flock), so two sessions benchmarking
    at once do not corrupt each other's numbers. Yields False if it gave up
    waiting after ``timeout`` s and runs anyway (the rows' other_cpu shows it)."""
    with path.open("a") as fh:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    print(f"# lock {path} still held after {timeout:.0f}s; running anyway", flush=True)
                    yield False
                    return
                if not told:
                    print(f"# another benchmark holds {path}; waiting (up to {timeout:.0f}s)", flush=True)
                    told = True
                time.sleep(0.5)
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_comparison(
    servers: Mapping[str, ServerCommand],
    configs: Iterable[LoadConfig],
    *,
    pin: bool = True,
    server_cpus: Sequence[int] = DEFAULT_SERVER_CPUS,
    repeats: int = 1,
    ready_timeout: float = 60.0,
    probe: Probe = "add",
    env: dict[str, str] | None = None,
    verbose: bool = True,
) -> list[dict[str, Any]]:
    """Start every server, run each config against each in turn, stop them all.

    Servers are interleaved (config 1: A, B; repeat: A, B; config 2: ...), so
    drifting background load on a shared machine hits them alike instead of
    favouring whichever ran first. Idle servers cost ~0 CPU meanwhile. Holds
    bench_lock() throughout, so concurrent harness runs queue up. Targets
    are overwritten with each server's address; with ``pin``, configs without
    explicit ``cpus`` get the CPUs the servers do not use. With repeats > 1 a
    row is the median-rps run (see median_row). Rows come config by config.
    """
    configs = list(configs)
    rows: list[dict[str, Any]] = []
    with bench_lock(), contextlib.ExitStack() as stack:
        started: dict[str, ServerProcess] = {}
        for name, cmd in servers.items():
            server = stack.enter_context(
                running_server(
                    cmd,
                    name=name,
                    pin=pin,
                    server_cpus=server_cpus,
                    ready_timeout=ready_timeout,
                    probe=probe,
                    env=env,
                )
            )
            started[name] = server
            if verbose:
                print(
                    f"# {name}: {shlex.join(server.argv)} (ready in {server.ready_s:.2f}s, "
                    f"idle RSS {server.idle_rss_mib:.0f} MiB)",
                    flush=True,
                )
        spare = client_cpus(list(server_cpus)) if pin else None
        for cfg in configs:
            if spare is not None and cfg.cpus is None:
                cfg = replace(cfg, cpus=spare)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in started}
            for _ in range(repeats):
                for name, server in started.items():
                    runs[name].append(measure(server, cfg, verbose=verbose))
            for name, server in started.items():
                row = runs[name][0] if repeats == 1 else median_row(runs[name])
                row["server_ready_s"] = round(server.ready_s, 3)
                row["server_idle_rss_mib"] = round(server.idle_rss_mib, 1)
                rows.append(row)
    return rows


def run_suite(
    server_name: str, server_cmd: ServerCommand, configs: Iterable[LoadConfig], **kwargs: Any
) -> list[dict[str, Any]]:
    """One server: start it, run every config, stop it (see run_comparison for kwargs)."""
    return run_comparison({server_name: server_cmd}, configs, **kwargs)


# --------------------------------------------------------------------------- reporting

DEFAULT_COLUMNS: tuple[str, ...] = (
    "server",
    "scenario",
    "rows",
    "concurrency",
    "processes",
    "rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "errors",
    "server_cpu",
    "client_cpu",
    "other_cpu",
    "limit",
    "server_us_per_op",
)
STREAM_COLUMNS: tuple[str, ...] = ("tokens", "items_per_s", "ttfi_p50_ms")


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Render rows as a GitHub markdown table (adds stream columns when relevant)."""
    if columns is None:
        columns = DEFAULT_COLUMNS
        if any(r.get("tokens") is not None for r in rows):
            columns = (*columns, *STREAM_COLUMNS)
    numeric = {c for c in columns if all(isinstance(r.get(c), (int, float)) for r in rows)}

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return str(value)

    lines = [
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---:" if c in numeric else "---" for c in columns) + " |",
    ]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def system_info() -> dict[str, Any]:
    """Context needed to compare numbers across machines/runs."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {}
    for dist in ("grpcio", "grpclib", "protobuf", "numpy"):
        with contextlib.suppress(Exception):
            from importlib import metadata

            versions[dist] = metadata.version(dist)
    commit = dirty = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(REPO_ROOT)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        # The servers run the working tree: say when blazerpc_core differs from the commit.
        dirty = subprocess.run([*git, "status", "--porcelain", "blazerpc_core"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    return {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit + (" (blazerpc_core modified)" if dirty else ""),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": model,
        "cpus": sorted(os.sched_getaffinity(0)),
        "versions": versions,
    }


def write_results(
    name: str,
    rows: Sequence[dict[str, Any]],
    meta: dict[str, Any] | None = None,
    results_dir: Path = RESULTS_DIR,
) -> Path:
    """Write ``results/<name>.json`` with system info, meta and all rows."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    doc = {
        "name": name,
        "system": system_info(),
        "meta": meta or {},
        "runs": list(rows),
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """CLI: start every --server, run the method x rows x concurrency matrix on each, interleaved."""
    parser = build_arg_parser(matrix=True)
    parser.description = "Start server(s) under test and benchmark them (loopback only)"
    parser.add_argument("--name", required=True, help="writes results/<name>.json")
    parser.add_argument(
        "--server",
        action="append",
        required=True,
        metavar="NAME=CMD",
        help='e.g. raw="{python} benchmarks/raw_server.py --port {port}" (repeatable)',
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server")
    parser.add_argument("--server-cpus", default="0", help="server CPUs when pinned (default 0)")
    parser.add_argument("--repeats", type=int, default=1, help="report the median run")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument(
        "--probe",
        choices=["add", "oip", "connect"],
        default="add",
        help="readiness: a real PredictAdd call (default), a real ModelInfer of classify, or a TCP connect",
    )
    args = parser.parse_args(argv)
    server_cpus = parse_cpus(args.server_cpus) or list(DEFAULT_SERVER_CPUS)
    servers: dict[str, str] = {}
    for spec in args.server:
        name, sep, cmd = spec.partition("=")
        if not sep or not name or name in servers:
            parser.error(f"--server needs a unique NAME=CMD, got {spec!r}")
        servers[name] = cmd
    try:
        rows = run_comparison(
            servers,
            matrix_configs(args),
            pin=not args.no_pin,
            server_cpus=server_cpus,
            repeats=args.repeats,
            ready_timeout=args.ready_timeout,
            probe=args.probe,
        )
    except (ServerStartError, LoadgenError, ValueError) as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    path = write_results(args.name, rows, meta={"argv": sys.argv[1:] if argv is None else argv})
    print()
    print(markdown_table(rows))
    print(f"\nwrote {path}")
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
